#!/usr/bin/python3
"""Splits `mariana eval --task arithmetic --responses-out F.jsonl` results by whether the imperfect
teacher's slip (train/corpora.h, ArithmeticOptions::teacher_slip: every carry and borrow forgotten)
changes the problem's answer, and counts responses that end in the slipped answer.

The slip is re-derived here from the column rules, independently of the C++ generator, so it also
checks what the pipeline's SFT data taught. Usage: bench/teacher_slip_breakdown.py F.jsonl [...]
Run with Debian's /usr/bin/python3 (standard library only)."""
import json
import sys


def columns(x):
    return [int(c) for c in reversed(str(x))]


def forgetful_add(a, b):
    # Each column adds its own digits only; the final carry is never written.
    da, db = columns(a), columns(b)
    digits = [((da[i] if i < len(da) else 0) + (db[i] if i < len(db) else 0)) % 10
              for i in range(max(len(da), len(db)))]
    return int("".join(str(d) for d in reversed(digits)))


def forgetful_sub(a, b):
    # a >= b; a column short of its digit borrows (x + 10 - y) but the next column never pays it back.
    da, db = columns(a), columns(b)
    digits = [(da[i] - (db[i] if i < len(db) else 0)) % 10 for i in range(len(da))]
    return int("".join(str(d) for d in reversed(digits)))


def slipped_answer(a, op, b):
    if op == "+":
        return forgetful_add(a, b)
    if op == "-":
        return forgetful_sub(a, b) if a >= b else -forgetful_sub(b, a)
    return a * b  # multiplication has no slip


def final_answer(response):
    marked = [line[5:].strip() for line in response.splitlines() if line.startswith("#### ")]
    return marked[-1] if marked else None


def main(paths):
    for path in paths:
        groups = {"affected": [0, 0, 0], "unaffected": [0, 0, 0]}  # problems, correct, slipped answer
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                a, op, b = r["question"].removesuffix(" = ?").split(" ")
                a, b = int(a), int(b)
                slip = slipped_answer(a, op, b)
                g = groups["affected" if str(slip) != r["answer"] else "unaffected"]
                g[0] += 1
                g[1] += bool(r["correct"])
                g[2] += final_answer(r["response"]) == str(slip) and str(slip) != r["answer"]
        n = sum(g[0] for g in groups.values())
        correct = sum(g[1] for g in groups.values())
        aff, un = groups["affected"], groups["unaffected"]
        print("%s: %d problems, accuracy %.1f%%; carry/borrow matters: %d, accuracy %.1f%%, slipped answer %.1f%%; "
              "the rest: %d, accuracy %.1f%%" % (
                  path, n, 100.0 * correct / max(1, n), aff[0], 100.0 * aff[1] / max(1, aff[0]),
                  100.0 * aff[2] / max(1, aff[0]), un[0], 100.0 * un[1] / max(1, un[0])))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: bench/teacher_slip_breakdown.py RESPONSES.jsonl [...]")
    main(sys.argv[1:])
