#include "collectors/source/event_source.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>

#include <spdlog/spdlog.h>

namespace isoscope::source {

std::string_view RecordKindName(std::uint16_t kind) {
  switch (kind) {
    case ISO_REC_THREAD_TOTALS:
      return "thread_totals";
    case ISO_REC_THREAD_EXIT:
      return "thread_exit";
    case ISO_REC_DELAY:
      return "delay";
    case ISO_REC_SNAPSHOT:
      return "snapshot";
    case ISO_REC_TRACEPARENT:
      return "traceparent";
    case ISO_REC_NET:
      return "net";
    case ISO_REC_KVM:
      return "kvm";
    case ISO_REC_NODE:
      return "node";
    default:
      return "other";
  }
}

std::uint64_t BootNs() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint16_t Deliver(const void* data, std::size_t len, SourceStats& stats, RecordSink& sink) {
  const std::string problem = abi::ValidateRecord(data, len);
  if (!problem.empty()) {
    ++stats.invalid;
    // Rate: invalid records are a bug or a corrupt file; log the first few.
    if (stats.invalid <= 5) spdlog::warn("dropping record: {}", problem);
    return ISO_REC_INVALID;
  }
  iso_rec_hdr hdr;
  std::memcpy(&hdr, data, sizeof(hdr));
  ++stats.received[hdr.kind];
  sink.OnRecord(hdr, std::span<const std::byte>(static_cast<const std::byte*>(data), hdr.size));
  return hdr.kind;
}

// ---- replay ------------------------------------------------------------------

Result<std::unique_ptr<ReplaySource>> ReplaySource::Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{fmt::format("cannot open recording {}: {}", path, std::strerror(errno)), errno};
  auto src = std::unique_ptr<ReplaySource>(new ReplaySource());
  src->path_ = path;
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  src->data_.resize(raw.size());
  std::memcpy(src->data_.data(), raw.data(), raw.size());
  if (src->data_.size() < sizeof(iso_file_hdr)) {
    return MakeError("{} is not an isoscope recording (too short)", path);
  }
  std::memcpy(&src->header_, src->data_.data(), sizeof(iso_file_hdr));
  if (std::memcmp(src->header_.magic, ISO_FILE_MAGIC, sizeof(src->header_.magic)) != 0) {
    return MakeError("{} is not an isoscope recording (bad magic)", path);
  }
  if (src->header_.abi_version != ISO_ABI_VERSION) {
    return MakeError("{} was recorded with ABI version {}; this build reads version {}", path,
                     src->header_.abi_version, ISO_ABI_VERSION);
  }
  if (src->header_.hdr_size < sizeof(iso_file_hdr) || src->header_.hdr_size > src->data_.size()) {
    return MakeError("{} has a corrupt file header (size {})", path, src->header_.hdr_size);
  }
  src->offset_ = src->header_.hdr_size;
  return src;
}

Result<bool> ReplaySource::NextInterval(RecordSink& sink) {
  while (offset_ < data_.size()) {
    const std::size_t left = data_.size() - offset_;
    if (left < sizeof(iso_rec_hdr)) {
      ++stats_.invalid;
      offset_ = data_.size();
      return MakeError("{}: truncated record at offset {}", path_, data_.size() - left);
    }
    iso_rec_hdr hdr;
    std::memcpy(&hdr, data_.data() + offset_, sizeof(hdr));
    if (hdr.size < sizeof(iso_rec_hdr) || hdr.size % 8 != 0 || hdr.size > left) {
      ++stats_.invalid;
      const std::size_t at = offset_;
      offset_ = data_.size();
      return MakeError("{}: corrupt record (size {}) at offset {}", path_, hdr.size, at);
    }
    const std::byte* rec = data_.data() + offset_;
    offset_ += hdr.size;
    if (Deliver(rec, hdr.size, stats_, sink) == ISO_REC_SNAPSHOT) return true;
  }
  return false;
}

std::string ReplaySource::Describe() const {
  return fmt::format("replay of {} (host {}, kernel {})", path_,
                     std::string(header_.hostname, strnlen(header_.hostname, sizeof(header_.hostname))),
                     std::string(header_.kernel, strnlen(header_.kernel, sizeof(header_.kernel))));
}

// ---- recording -----------------------------------------------------------------

Result<std::unique_ptr<RecordWriter>> RecordWriter::Create(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return Error{fmt::format("cannot create {}: {}", path, std::strerror(errno)), errno};
  iso_file_hdr hdr{};
  std::memcpy(hdr.magic, ISO_FILE_MAGIC, sizeof(hdr.magic));
  hdr.abi_version = ISO_ABI_VERSION;
  hdr.hdr_size = sizeof(hdr);
  hdr.boot_ns_start = BootNs();
  timespec rt{};
  clock_gettime(CLOCK_REALTIME, &rt);
  hdr.real_ns_start = static_cast<std::uint64_t>(rt.tv_sec) * 1000000000ull + rt.tv_nsec;
  gethostname(hdr.hostname, sizeof(hdr.hostname) - 1);
  utsname u{};
  if (uname(&u) == 0) {
    // Truncated to the field on purpose; the header keeps a terminating NUL.
    std::memcpy(hdr.kernel, u.release, std::min(sizeof(hdr.kernel) - 1, strnlen(u.release, sizeof(u.release))));
  }
  if (std::fwrite(&hdr, sizeof(hdr), 1, f) != 1) {
    std::fclose(f);
    return MakeError("cannot write {}", path);
  }
  auto w = std::unique_ptr<RecordWriter>(new RecordWriter());
  w->file_ = f;
  w->path_ = path;
  return w;
}

RecordWriter::~RecordWriter() {
  if (file_) std::fclose(file_);
}

void RecordWriter::OnRecord(const iso_rec_hdr& /*hdr*/, std::span<const std::byte> bytes) {
  if (!file_ || failed_) return;
  if (std::fwrite(bytes.data(), bytes.size(), 1, file_) != 1) {
    failed_ = true;
    spdlog::error("writing {} failed: {}", path_, std::strerror(errno));
    return;
  }
  ++records_;
}

Status RecordWriter::Close() {
  if (!file_) return {};
  const bool close_failed = std::fclose(file_) != 0;
  file_ = nullptr;
  if (failed_ || close_failed) return MakeError("recording {} is incomplete (write error)", path_);
  return {};
}

// ---- synthetic ---------------------------------------------------------------

Result<bool> SyntheticSource::NextInterval(RecordSink& sink) {
  while (next_ < records_.size()) {
    const auto& r = records_[next_++];
    if (Deliver(r.data(), r.size(), stats_, sink) == ISO_REC_SNAPSHOT) return true;
  }
  return false;
}

}  // namespace isoscope::source
