#!/usr/bin/env python3
"""The repository stands alone: its documentation lives in it, and every pointer to it resolves.

Checks, over every tracked (and untracked, not ignored) file outside build/:
  1. no file points outside the repository to private notes that a clone does not have (the
     patterns in FORBIDDEN);
  2. every relative markdown link `[text](path)` or `[text](path#anchor)` in a .md file points to
     an existing file, and its anchor (if any) to a heading of that file;
  3. every `docs/<name>.md#<anchor>` mention in any file (the form code comments use to cite the docs)
     names an existing file under docs/ and a heading of it.

Usage: check_docs.py [REPO_ROOT]   (default: two folders up from this script). Exit 0 when clean,
1 with one line per problem (file:line: what) otherwise.
"""
import os
import re
import subprocess
import sys

# (regex, what it is). This file itself is exempt, since it has to spell them.
FORBIDDEN = [(re.compile(p), what) for p, what in [
    (r"\.\./shared", "a path into the parent folder's private notebook"),
    (r"notes \u00a7", "a section of private notes"),
    (r"notes/", "a private notes folder"),
    (r"DESIGN\.md", "a private design document"),
    (r"[A-Z0-9-]*(DEPENDENCIES|REFERENCE)\.md", "a private notes file"),
    (r"\bgotcha \d", "a numbered item of private notes"),
]]
# Without git (an exported tree), these folders of outputs are skipped (.gitignore lists them).
SKIP_DIRS = {"build", ".git", ".mariana", "runs", "out", "__pycache__", ".cache"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
DOCS_REF = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)(?:#([A-Za-z0-9_-]+))?")


def repo_files(root):
    """Relative paths of the files to check: git's view when it has one, else a walk."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout.decode()
        files = sorted({f for f in out.split("\0") if f})
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.startswith("build-")]
            files += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return [f for f in files if f.split("/")[0] not in SKIP_DIRS and os.path.isfile(os.path.join(root, f))]


def read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        text = read_text(path) or ""
        seen, out = {}, set()
        in_code = False
        for line in text.splitlines():
            if line.startswith("```"):
                in_code = not in_code
                continue
            m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m and not in_code:
                a = slug(m.group(1))
                n = seen.get(a, 0)
                seen[a] = n + 1
                out.add(a if n == 0 else f"{a}-{n}")
        cache[path] = out
    return cache[path]


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
    me = os.path.relpath(os.path.abspath(__file__), root)
    problems = []
    files = repo_files(root)
    if not files:
        print(f"check_docs: FAIL: no files found under {root}", file=sys.stderr)
        return 1
    for rel in files:
        text = read_text(os.path.join(root, rel))
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if rel != me:
                for pat, what in FORBIDDEN:
                    m = pat.search(line)
                    if m:
                        problems.append(f"{rel}:{n}: '{m.group(0)}' ({what}); point into docs/ instead")
            for m in DOCS_REF.finditer(line):
                target = os.path.join(root, "docs", m.group(1))
                if not os.path.isfile(target):
                    problems.append(f"{rel}:{n}: docs/{m.group(1)} does not exist")
                elif m.group(2) and m.group(2) not in anchors(target):
                    problems.append(f"{rel}:{n}: docs/{m.group(1)} has no heading for #{m.group(2)}")
            if not rel.endswith(".md"):
                continue
            for m in LINK.finditer(line):
                url = m.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", url):  # http:, https:, mailto:
                    continue
                path, _, anchor = url.partition("#")
                target = os.path.normpath(os.path.join(root, os.path.dirname(rel), path)) if path else \
                    os.path.join(root, rel)
                if not target.startswith(root + os.sep) and target != root:
                    problems.append(f"{rel}:{n}: link '{url}' leaves the repository")
                elif not os.path.exists(target):
                    problems.append(f"{rel}:{n}: link '{url}': {os.path.relpath(target, root)} does not exist")
                elif anchor and os.path.isfile(target) and target.endswith(".md") and anchor not in anchors(target):
                    problems.append(f"{rel}:{n}: link '{url}': no heading for #{anchor} in "
                                    f"{os.path.relpath(target, root)}")
    for p in problems:
        print(p)
    print(f"check_docs: {len(files)} files, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
