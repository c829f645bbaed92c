// Whole-file reads and crash-safe whole-file writes (temp file + fsync + rename + directory fsync).
// POSIX only. Errors name the path and carry the errno text.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace mariana {

// The file's bytes. NotFound if it does not exist; other failures map errno to a code
// (PermissionDenied, Unavailable, ...).
Result<std::string> read_file(const std::string& path);

// Replaces `path` with `bytes` atomically: a reader sees the old file or the new one, never a mix,
// and after OK the new contents survive a crash. Writes "<path>.tmp.XXXXXX" in the same directory,
// fsyncs it, renames it over `path`, fsyncs the directory. A new file gets mode 0644; an existing
// file keeps its mode. On any error the temporary file is removed.
Status write_file_atomic(const std::string& path, std::string_view bytes);

// Status for a failed system call: the code follows errno (ENOENT -> NotFound, EACCES/EPERM ->
// PermissionDenied, ENOSPC/EDQUOT -> ResourceExhausted, else Unavailable); the message is
// "<what>: <strerror(err)>".
Status errno_status(int err, const std::string& what);

}  // namespace mariana
