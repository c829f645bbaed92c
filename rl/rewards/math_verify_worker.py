"""The math_verify reward scorer's worker (rl/rewards/math_verify_scorer.h): a long-lived process
that answers JSON lines {"response", "answer"} on stdin with {"score", "error", "extracted"} on
stdout, using Hugging Face's math-verify library (parse + verify, as veRL, TRL and open-r1 do).

The first line it writes is {"ready": true, "math_verify": VERSION}, or {"ready": false, "error"}
when the library cannot be imported. The reference answer is wrapped in \\boxed{...} unless it has
one (veRL's convention), then parsed as LaTeX or a plain expression; the response is parsed with
math-verify's default extraction (the last \\boxed{}, "final answer is", a LaTeX or plain number).
Run by the scorer from a venv made by scripts/pyenv.sh; runnable by hand for debugging:
  echo '{"response": "\\\\boxed{2\\\\sqrt{2}}", "answer": "\\\\sqrt{8}"}' | VENV/bin/python math_verify_worker.py
"""
import json
import logging
import sys


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    try:
        import math_verify
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    except Exception as e:  # ImportError, or a broken dependency
        reply({"ready": False, "error": f"{sys.executable} cannot import math_verify: {e!r}"})
        return 3
    # math-verify logs parse failures and timeouts at WARNING; the scorer reports them itself.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    version = getattr(math_verify, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version
        version = dist_version("math-verify")
    reply({"ready": True, "math_verify": version})
    gold_config = [LatexExtractionConfig(), ExprExtractionConfig()]
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            answer, response = req["answer"], req["response"]
            gold_text = answer if "\\boxed" in answer else "\\boxed{" + answer + "}"
            gold = parse(gold_text, extraction_config=gold_config)
            if not gold:
                reply({"score": 0.0, "error": "cannot parse the reference answer", "extracted": None})
                continue
            pred = parse(response)
            extracted = pred[-1] if pred and isinstance(pred[-1], str) else None
            reply({"score": 1.0 if pred and verify(gold, pred) else 0.0, "error": None, "extracted": extracted})
        except Exception as e:  # one bad sample must not end the worker
            reply({"score": 0.0, "error": f"{type(e).__name__}: {e}", "extracted": None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
