# The repository stands alone (tests/docs/check_docs.py): no file points to notes a clone lacks,
# every relative markdown link and every docs/<name>.md#<anchor> mention resolves. Fast; runs on
# the source tree. Included from tests/CMakeLists.txt.
add_test(NAME docs.self_contained
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/check_docs.py ${CMAKE_SOURCE_DIR})
set_tests_properties(docs.self_contained PROPERTIES LABELS unit TIMEOUT 60)
