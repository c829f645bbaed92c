// CURVE keys, the ZAP handler and the socket options (see curve.h).
#include "proto/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <vector>

#include "core/file_util.h"

namespace mariana::proto {

namespace {

constexpr size_t kZ85KeyChars = 40;

// Writes a secret file atomically with mode 0600 from its creation (never readable by others).
Status write_private_file(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_status(errno, "create " + tmp);
  const bool ok = ::fchmod(fd, 0600) == 0 &&
                  ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());
    return errno_status(err, "write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_status(errno, "rename " + tmp + " to " + path);
  return Status::Ok();
}

Result<std::string> z85_decode_key(const std::string& z85, const std::string& what) {
  if (z85.size() != kZ85KeyChars) return InvalidArgument(what + ": expected a 40-character Z85 key");
  std::string bin(32, '\0');
  if (zmq_z85_decode(reinterpret_cast<uint8_t*>(bin.data()), z85.c_str()) == nullptr)
    return InvalidArgument(what + ": not a Z85 key");
  return bin;
}

// "name value" lines into a map; InvalidArgument naming the file and line.
Result<std::vector<std::pair<std::string, std::string>>> read_fields(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string k, v;
    if (!(ls >> k >> v)) return InvalidArgument(path + ":" + std::to_string(n) + ": expected \"NAME KEY\"");
    out.emplace_back(k, v);
  }
  return out;
}

std::string curve_dir(const std::string& state_dir) { return state_dir + "/curve"; }

}  // namespace

Result<CurveKeypair> curve_keypair() {
  char pub[41] = {0}, sec[41] = {0};
  if (zmq_curve_keypair(pub, sec) != 0)
    return Unavailable(std::string("zmq_curve_keypair: ") + zmq_strerror(zmq_errno()) +
                       " (libzmq without CURVE support?)");
  return CurveKeypair{pub, sec};
}

bool endpoint_is_loopback(const std::string& ep) {
  return ep.rfind("tcp://127.", 0) == 0 || ep.rfind("tcp://localhost:", 0) == 0 || ep.rfind("ipc://", 0) == 0 ||
         ep.rfind("inproc://", 0) == 0;
}

Result<CurveKeypair> curve_server_keys_ensure(const std::string& state_dir) {
  const std::string dir = curve_dir(state_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Unavailable("cannot create " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  const std::string server_path = dir + "/server.key";
  CurveKeypair server;
  if (std::filesystem::exists(server_path, ec)) {
    MARIANA_ASSIGN_OR_RETURN(auto fields, read_fields(server_path));
    for (auto& [k, v] : fields) {
      if (k == "public") server.public_key = v;
      if (k == "secret") server.secret_key = v;
    }
    MARIANA_RETURN_IF_ERROR(z85_decode_key(server.public_key, server_path + ": public").status());
    MARIANA_RETURN_IF_ERROR(z85_decode_key(server.secret_key, server_path + ": secret").status());
    ::chmod(server_path.c_str(), 0600);
  } else {
    MARIANA_ASSIGN_OR_RETURN(server, curve_keypair());
    MARIANA_RETURN_IF_ERROR(
        write_private_file(server_path, "public " + server.public_key + "\nsecret " + server.secret_key + "\n"));
  }
  if (!std::filesystem::exists(dir + "/client.key", ec))
    MARIANA_RETURN_IF_ERROR(curve_add_client(state_dir, "state-dir", dir + "/client.key"));
  return server;
}

Status curve_add_client(const std::string& state_dir, const std::string& name, const std::string& out_path) {
  const std::string dir = curve_dir(state_dir);
  const std::string server_path = dir + "/server.key";
  MARIANA_ASSIGN_OR_RETURN(auto fields, read_fields(server_path));
  std::string server_public;
  for (auto& [k, v] : fields)
    if (k == "public") server_public = v;
  if (server_public.empty()) return InvalidArgument(server_path + ": no public key");
  MARIANA_ASSIGN_OR_RETURN(CurveKeypair client, curve_keypair());
  MARIANA_RETURN_IF_ERROR(write_private_file(
      out_path, "server " + server_public + "\npublic " + client.public_key + "\nsecret " + client.secret_key + "\n"));
  const std::string allow = dir + "/authorized_keys";
  std::string text;
  std::error_code ec;
  if (std::filesystem::exists(allow, ec)) {
    MARIANA_ASSIGN_OR_RETURN(text, read_file(allow));
  }
  text += client.public_key + " " + (name.empty() ? std::string("client") : name) + "\n";
  return write_private_file(allow, text);
}

Result<CurveClientKeys> curve_client_load(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(auto fields, read_fields(path));
  CurveClientKeys keys;
  for (auto& [k, v] : fields) {
    if (k == "server") keys.server_public = v;
    else if (k == "public") keys.client.public_key = v;
    else if (k == "secret") keys.client.secret_key = v;
  }
  MARIANA_RETURN_IF_ERROR(z85_decode_key(keys.server_public, path + ": server").status());
  MARIANA_RETURN_IF_ERROR(z85_decode_key(keys.client.public_key, path + ": public").status());
  MARIANA_RETURN_IF_ERROR(z85_decode_key(keys.client.secret_key, path + ": secret").status());
  return keys;
}

Status curve_server_apply(zmq::socket_t& sock, const CurveKeypair& server) {
  MARIANA_ASSIGN_OR_RETURN(auto secret, z85_decode_key(server.secret_key, "server secret key"));
  try {
    sock.set(zmq::sockopt::curve_server, 1);
    sock.set(zmq::sockopt::curve_secretkey, zmq::buffer(secret));
    sock.set(zmq::sockopt::zap_domain, "mariana");
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("CURVE server socket: ") + e.what());
  }
  return Status::Ok();
}

Status curve_client_apply(zmq::socket_t& sock, const CurveClientKeys& keys) {
  MARIANA_ASSIGN_OR_RETURN(auto server, z85_decode_key(keys.server_public, "server public key"));
  MARIANA_ASSIGN_OR_RETURN(auto pub, z85_decode_key(keys.client.public_key, "client public key"));
  MARIANA_ASSIGN_OR_RETURN(auto sec, z85_decode_key(keys.client.secret_key, "client secret key"));
  try {
    sock.set(zmq::sockopt::curve_serverkey, zmq::buffer(server));
    sock.set(zmq::sockopt::curve_publickey, zmq::buffer(pub));
    sock.set(zmq::sockopt::curve_secretkey, zmq::buffer(sec));
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("CURVE client socket: ") + e.what());
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- ZAP

ZapHandler::ZapHandler(zmq::context_t& ctx, std::string authorized_keys_path)
    : ctx_(ctx), path_(std::move(authorized_keys_path)), sock_(ctx, zmq::socket_type::rep) {}

ZapHandler::~ZapHandler() { stop(); }

Status ZapHandler::start() {
  try {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("ZAP handler: cannot bind inproc://zeromq.zap.01: ") + e.what());
  }
  reload();
  thread_ = std::thread([this] { loop(); });
  return Status::Ok();
}

void ZapHandler::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  if (sock_) sock_.close();
}

void ZapHandler::reload() {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    allowed_.clear();
    loaded_mtime_ = -1;
    return;
  }
  const int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime == loaded_mtime_) return;
  auto fields = read_fields(path_);
  if (!fields.ok()) {
    std::fprintf(stderr, "controller: ZAP: %s; refusing every client\n", fields.status().to_string().c_str());
    allowed_.clear();
    loaded_mtime_ = mtime;
    return;
  }
  allowed_.clear();
  for (auto& [key, name] : fields.value()) {
    auto bin = z85_decode_key(key, path_);
    if (bin.ok()) allowed_.insert(bin.value());
  }
  loaded_mtime_ = mtime;
}

// RFC 27: request [version, request id, domain, address, identity, mechanism, credentials...];
// reply [version, request id, status code, status text, user id, metadata].
void ZapHandler::loop() {
  while (!stop_.load()) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<std::string> frames;
      for (bool more = true; more;) {
        zmq::message_t m;
        if (!sock_.recv(m, zmq::recv_flags::none)) break;
        frames.emplace_back(static_cast<const char*>(m.data()), m.size());
        more = m.more();
      }
      std::string code = "400", text = "not authorized";
      if (frames.size() >= 7 && frames[0] == "1.0" && frames[5] == "CURVE") {
        reload();
        if (allowed_.count(frames[6])) {
          code = "200";
          text = "OK";
        }
      } else if (frames.size() >= 6) {
        text = "CURVE required";
      }
      if (code == "200") accepted_.fetch_add(1);
      else refused_.fetch_add(1);
      const std::string rid = frames.size() >= 2 ? frames[1] : "";
      sock_.send(zmq::buffer(std::string("1.0")), zmq::send_flags::sndmore);
      sock_.send(zmq::buffer(rid), zmq::send_flags::sndmore);
      sock_.send(zmq::buffer(code), zmq::send_flags::sndmore);
      sock_.send(zmq::buffer(text), zmq::send_flags::sndmore);
      sock_.send(zmq::buffer(std::string()), zmq::send_flags::sndmore);
      sock_.send(zmq::buffer(std::string()), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      std::fprintf(stderr, "controller: ZAP: %s\n", e.what());
    }
  }
}

}  // namespace mariana::proto
