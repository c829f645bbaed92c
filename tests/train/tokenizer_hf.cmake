# HF compatibility of the tokenizer (tests/train/tokenizer_hf_check.py): `mariana tokenizer encode`
# must give the same ids as the Python tokenizers library on the same tokenizer.json, and decode the
# same text. The script uses ${CMAKE_BINARY_DIR}/pyenv-tokenizers (creating it from PyPI) when
# /usr/bin/python3 cannot import tokenizers, and FAILS (never skips) when it still cannot.
# Included from tests/CMakeLists.txt.
add_test(NAME tokenizer.hf_compat
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/tokenizer_hf_check.py
                 --mariana $<TARGET_FILE:mariana> --workdir ${CMAKE_CURRENT_BINARY_DIR}/tokenizer_hf
                 --venv ${CMAKE_BINARY_DIR}/pyenv-tokenizers)
set_tests_properties(tokenizer.hf_compat PROPERTIES LABELS reference TIMEOUT 600)
