#!/usr/bin/env python3
"""HF compatibility of Mariana's tokenizer: trains one with `mariana tokenizer train` on a seeded
corpus, then checks that the Python `tokenizers` library loads the tokenizer.json and gives the
same ids as `mariana tokenizer encode --json`, and the same text as `mariana tokenizer decode`.

Needs `tokenizers`. When the running Python cannot import it, the script uses (creating it if
missing) a virtual environment at --venv: /usr/bin/python3 -m venv --system-site-packages VENV and
VENV/bin/pip install tokenizers==0.20.3, then re-runs itself there. It FAILS (exit 1), never skips,
when tokenizers still cannot be imported.

The corpus and strings stay inside what the pre-tokenizer classifies exactly (ASCII, Latin-1,
General Punctuation, Unicode white space, and letters of other scripts); see
train/tokenizer_format.md for the approximation.
"""
import argparse
import json
import os
import random
import subprocess
import sys

TOKENIZERS_VERSION = "0.20.3"


def fail(msg):
    print("tokenizer_hf_check: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def ensure_tokenizers(venv):
    try:
        import tokenizers  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get("MARIANA_TOKENIZERS_REEXEC"):
        fail(f"`import tokenizers` fails even in {sys.executable}; delete {venv} and re-run, "
             f"or install it: {venv}/bin/pip install tokenizers=={TOKENIZERS_VERSION}")
    py = os.path.join(venv, "bin", "python")
    has = os.path.exists(py) and subprocess.run([py, "-c", "import tokenizers"], capture_output=True).returncode == 0
    if not has:
        print(f"tokenizer_hf_check: creating {venv} with tokenizers=={TOKENIZERS_VERSION}", flush=True)
        steps = [["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv],
                 [py, "-m", "pip", "install", "-q", f"tokenizers=={TOKENIZERS_VERSION}"]]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"cannot import tokenizers and `{' '.join(cmd)}` failed (rc {r.returncode}):\n{r.stdout}{r.stderr}")
    os.environ["MARIANA_TOKENIZERS_REEXEC"] = "1"
    os.execv(py, [py] + sys.argv)


WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "token", "tokenizer", "merge", "lower",
         "lowest", "newer", "wider", "Byte", "Pair", "Encoding", "Mariana", "model", "DeepSeek", "café", "über",
         "naïve", "résumé", "Zürich", "Ærø", "straße", "it's", "we're", "they've", "I'll", "you'd", "I'm", "don't",
         "ISN'T", "x86_64", "foo_bar", "HTTP/2", "e-mail", "日本語", "Москва", "Ελλάδα"]
PUNCT = [".", ",", "!", "?", ";", ":", " -", " (x)", "\"", "...", "'", " [1]", " {a: b}", " #", " @user", " $5",
         " 50%", " ¿qué?", " «ok»", " “quoted”", " — ", "…", " ’", " ×", " ½", " ²"]


def make_corpus(n_bytes, seed):
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_bytes:
        r = rng.random()
        if r < 0.65:
            piece = rng.choice(WORDS)
        elif r < 0.78:
            piece = str(rng.randrange(0, 10 ** rng.randrange(1, 8)))
        elif r < 0.9:
            piece = rng.choice(PUNCT)
        elif r < 0.95:
            piece = rng.choice(["\n", "\n\n", "\t", "  ", "   ", " \n ", "\u00a0", "\u2003", "\r\n"])
        else:
            piece = rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "''"])
        piece += rng.choice([" ", " ", " ", "", "\n"])
        out.append(piece)
        size += len(piece.encode("utf-8"))
    return "".join(out)


EDGE_CASES = [
    "", " ", "  ", "a", " a", "a ", "  leading spaces", "trailing spaces   ", "\n", "\n\n\n", "\t\tx", " \t \n x",
    "tabs\t\tand\n newlines\r\n", "I'll we're they've 'S 's 'LL '", "don't won't can't", "12345 3.14 1,000,000 007",
    "?!... ((()))", "café über naïve résumé Zürich", "ÀÉÎÕÜ àéîõü ÿ", "× ÷ ² ½ ¿ « » ° ± µ ª º",
    "“quoted” — dash … ’apostrophe’ ‘single’", "a\u00a0b", "a \u00a0b", "a\u2003\u2003b", "x\u200by", "日本語のテキスト",
    "Москва и Санкт-Петербург", "mixed123abc456", "http://example.com/path?q=1&r=2", "C:\\path\\to\\file",
    "    def f(x):\n        return x * 2\n", "{\"json\": [1, 2, 3]}", "a" * 500, " " * 300 + "x", "ab" * 200,
]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mariana", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--vocab-size", type=int, default=2000)
    args = ap.parse_args()
    ensure_tokenizers(args.venv)
    import tokenizers

    os.makedirs(args.workdir, exist_ok=True)
    corpus_path = os.path.join(args.workdir, "corpus.txt")
    jsonl_path = os.path.join(args.workdir, "corpus.jsonl")
    tok_path = os.path.join(args.workdir, "tokenizer.json")
    corpus = make_corpus(400_000, 1)
    with open(corpus_path, "w", encoding="utf-8", newline="") as f:
        f.write(corpus)
    docs = [make_corpus(2000, 100 + i) for i in range(50)]
    with open(jsonl_path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")

    r = run([args.mariana, "tokenizer", "train", "--vocab-size", str(args.vocab_size), "--input", corpus_path,
             jsonl_path, "--out", tok_path], text=True)
    if r.returncode != 0:
        fail(f"mariana tokenizer train failed (rc {r.returncode}):\n{r.stdout}{r.stderr}")
    print(r.stdout.strip(), flush=True)

    hf = tokenizers.Tokenizer.from_file(tok_path)
    with open(tok_path, encoding="utf-8") as f:
        spec = json.load(f)
    n_vocab = len(spec["model"]["vocab"])
    if hf.get_vocab_size(with_added_tokens=True) != n_vocab:
        fail(f"HF vocab size {hf.get_vocab_size(with_added_tokens=True)} != {n_vocab} in {tok_path}")
    specials = {t["content"]: t["id"] for t in spec["added_tokens"]}
    for content, tid in specials.items():
        if hf.token_to_id(content) != tid:
            fail(f"HF id of {content!r} is {hf.token_to_id(content)}, file says {tid}")

    def ours_encode(text, name):
        p = os.path.join(args.workdir, name)
        with open(p, "wb") as f:
            f.write(text.encode("utf-8"))
        r = run([args.mariana, "tokenizer", "encode", "--tokenizer", tok_path, "--input", p, "--json"])
        if r.returncode != 0:
            fail(f"mariana tokenizer encode failed (rc {r.returncode}): {r.stderr.decode(errors='replace')}")
        return json.loads(r.stdout)["ids"]

    def compare(text, name):
        ours = ours_encode(text, name)
        theirs = hf.encode(text, add_special_tokens=False).ids
        if ours != theirs:
            i = next((k for k in range(min(len(ours), len(theirs))) if ours[k] != theirs[k]), min(len(ours), len(theirs)))
            fail(f"ids differ for {name} ({len(text)} chars) at position {i}:\n  text near there: "
                 f"{hf.decode(theirs[max(0, i - 5):i + 5], skip_special_tokens=False)!r}\n"
                 f"  mariana: {ours[max(0, i - 5):i + 5]}\n  HF:      {theirs[max(0, i - 5):i + 5]}")
        return ours

    # The whole corpus in one call, then edge cases and held-out text one by one.
    n_checked = 0
    ids = compare(corpus, "corpus_copy.txt")
    n_checked += len(ids)
    heldout = make_corpus(100_000, 2)
    n_checked += len(compare(heldout, "heldout.txt"))
    cases = EDGE_CASES + [make_corpus(random.Random(s).randrange(1, 300), 1000 + s) for s in range(60)]
    for k, text in enumerate(cases):
        n_checked += len(compare(text, f"case_{k}.txt"))
    # --text takes the same path as --input.
    r = run([args.mariana, "tokenizer", "encode", "--tokenizer", tok_path, "--text", "Hello world, it's 2024!", "--json"])
    if r.returncode != 0 or json.loads(r.stdout)["ids"] != hf.encode("Hello world, it's 2024!").ids:
        fail(f"--text gives other ids than HF: {r.stdout!r} {r.stderr!r}")

    # Decode: raw bytes from mariana == HF decode (special tokens kept) for valid UTF-8.
    bos, eos = specials["<｜begin▁of▁sentence｜>"], specials["<｜end▁of▁sentence｜>"]
    for k, text in enumerate(cases[:40] + [heldout[:5000]]):
        ids = hf.encode(text).ids
        for seq in (ids, [bos] + ids + [eos]):
            r = run([args.mariana, "tokenizer", "decode", "--tokenizer", tok_path, "--ids", " ".join(map(str, seq))])
            if r.returncode != 0:
                fail(f"mariana tokenizer decode failed (rc {r.returncode}): {r.stderr.decode(errors='replace')}")
            theirs = hf.decode(seq, skip_special_tokens=False)
            if r.stdout != theirs.encode("utf-8"):
                fail(f"decode differs for case {k}: mariana {r.stdout[:200]!r} HF {theirs[:200]!r}")
            if seq is ids and r.stdout != text.encode("utf-8"):
                fail(f"decode does not round trip case {k}: {r.stdout[:200]!r} vs {text[:200]!r}")

    # Plain output: the same ids, space-separated.
    r = run([args.mariana, "tokenizer", "encode", "--tokenizer", tok_path, "--text", "plain output, 123"], text=True)
    if r.returncode != 0 or r.stdout.split() != [str(i) for i in hf.encode("plain output, 123").ids]:
        fail(f"plain encode output {r.stdout!r} != HF ids {hf.encode('plain output, 123').ids}")

    # Bad input: exit 2 and a message naming the flag or file (and field).
    broken = os.path.join(args.workdir, "broken.json")
    spec_broken = json.loads(json.dumps(spec))
    del spec_broken["model"]["vocab"]
    with open(broken, "w", encoding="utf-8") as f:
        json.dump(spec_broken, f)
    missing = os.path.join(args.workdir, "missing.txt")
    bad_cases = [
        (["decode", "--tokenizer", tok_path, "--ids", "1 x"], "--ids"),
        (["decode", "--tokenizer", tok_path, "--ids", str(n_vocab)], "--ids"),
        (["encode", "--tokenizer", missing, "--text", "a"], missing),
        (["encode", "--tokenizer", broken, "--text", "a"], "model.vocab"),
        (["encode", "--tokenizer", tok_path, "--input", missing], missing),
        (["train", "--vocab-size", "10", "--input", corpus_path, "--out", os.path.join(args.workdir, "x.json")], "--vocab-size"),
        (["train", "--vocab-size", "500", "--input", missing, "--out", os.path.join(args.workdir, "x.json")], missing),
    ]
    for argv, needle in bad_cases:
        r = run([args.mariana, "tokenizer"] + argv, text=True)
        if r.returncode != 2 or needle not in r.stderr:
            fail(f"`mariana tokenizer {' '.join(argv)}`: want exit 2 naming {needle!r}, got rc {r.returncode}: {r.stderr!r}")

    print(f"tokenizer_hf_check: OK: tokenizers {tokenizers.__version__}, vocab {n_vocab}, "
          f"{len(cases) + 2} texts, {n_checked} ids identical; decode identical")


if __name__ == "__main__":
    main()
