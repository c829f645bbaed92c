#!/usr/bin/python3
"""Agreement between the rule-based `math` scorer and `math_verify` (math-verify in a Python
worker) on a labelled case set: runs `mariana reward score` with each scorer on the same JSONL and
prints, per kind of answer, how often they agree and how often each matches the label ("truth":
the verdict a reader of the final answer would give), then every disagreement.

usage: bench/math_scorer_agreement.py --mariana build/mariana [--cases bench/math_answers.jsonl] [--venv DIR]
"""
import argparse
import collections
import json
import subprocess
import sys


def score(mariana, scorer, cases_path, extra):
    cmd = [mariana, "reward", "score", "--scorer", scorer, "--input", cases_path] + extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (rc {r.returncode}):\n{r.stderr}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mariana", required=True)
    ap.add_argument("--cases", default="bench/math_answers.jsonl")
    ap.add_argument("--venv", default=None)
    a = ap.parse_args()
    cases = [json.loads(line) for line in open(a.cases) if line.strip()]
    rule = score(a.mariana, "math", a.cases, [])
    mv = score(a.mariana, "math_verify", a.cases, ["--venv", a.venv] if a.venv else [])
    assert len(rule) == len(mv) == len(cases)
    rows = collections.OrderedDict()
    disagreements = []
    for c, r, m in zip(cases, rule, mv):
        k = rows.setdefault(c["kind"], [0, 0, 0, 0])
        rv, mvv = r["reward"] >= 1.0, m["reward"] >= 1.0
        k[0] += 1
        k[1] += rv == mvv
        k[2] += rv == c["truth"]
        k[3] += mvv == c["truth"]
        if rv != mvv:
            disagreements.append((c, r, m))
    total = [sum(v[i] for v in rows.values()) for i in range(4)]
    print("| kind | cases | scorers agree | math = label | math_verify = label |")
    print("|---|---|---|---|---|")
    for kind, v in list(rows.items()) + [("all", total)]:
        print(f"| {kind} | {v[0]} | {v[1]} | {v[2]} | {v[3]} |")
    print(f"\n{len(disagreements)} disagreements (response | answer | label | math | math_verify):")
    for c, r, m in disagreements:
        print(f"- `{c['response']!r}` | `{c['answer']}` | {c['truth']} | {r['reason']} | {m['reason']}"
              + (f" ({m['detail']})" if m["reason"] != "correct" else ""))


if __name__ == "__main__":
    main()
