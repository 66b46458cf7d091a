// Pods by name (collectors/identity/cri.hpp, workload_index.hpp, correlator/cgroup_resolver):
// FindPod's answers and errors on snapshots written here; the CRI client, the workload index and
// the resolver against a CRI server served by this test over a real unix-socket gRPC channel (the
// real runtime, containerd, is driven by tests/integration/test_pods.py); a workload's cgroup
// directories found in a hierarchy made of real directories.
#include "collectors/identity/cri.hpp"

#include <sys/stat.h>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "collectors/identity/cgroup_identity.hpp"
#include "collectors/identity/workload_index.hpp"
#include "correlator/cgroup_resolver.hpp"
#include "runtime/v1/api.grpc.pb.h"

namespace isoscope::identity {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

CriPod Pod(const std::string& id, const std::string& ns, const std::string& name,
           const std::string& uid, bool ready = true, std::int64_t created = 1) {
  CriPod p;
  p.id = id;
  p.namespace_name = ns;
  p.name = name;
  p.uid = uid;
  p.ready = ready;
  p.created_at_ns = created;
  return p;
}

CriContainer Ctr(const std::string& id, const std::string& pod, const std::string& name,
                 std::uint32_t attempt = 0, const std::string& state = "running") {
  CriContainer c;
  c.id = id;
  c.pod_sandbox_id = pod;
  c.name = name;
  c.attempt = attempt;
  c.state = state;
  return c;
}

PodQuery Q(std::string name = "", std::string ns = "", std::string container = "",
           std::string uid = "", std::string container_id = "") {
  PodQuery q;
  q.name = std::move(name);
  q.namespace_name = std::move(ns);
  q.container = std::move(container);
  q.pod_uid = std::move(uid);
  q.container_id = std::move(container_id);
  return q;
}

CriSnapshot Node() {
  CriSnapshot s;
  s.endpoint = "/run/containerd/containerd.sock";
  s.runtime_name = "containerd";
  s.runtime_version = "1.6.20";
  s.pods = {Pod("s1", "shop", "checkout-7f9c4-x2z9q", "11111111-1111-1111-1111-111111111111"),
            Pod("s2", "shop", "cart-0", "22222222-2222-2222-2222-222222222222"),
            Pod("s3", "staging", "cart-0", "33333333-3333-3333-3333-333333333333"),
            // A re-created sandbox of one pod: the old one not ready.
            Pod("s4old", "web", "front", "44444444-4444-4444-4444-444444444444", false, 1),
            Pod("s4new", "web", "front", "44444444-4444-4444-4444-444444444444", true, 2)};
  s.containers = {Ctr("aaaaaaaa01", "s1", "app", 0, "exited"), Ctr("aaaaaaaa02", "s1", "app", 1),
                  Ctr("bbbbbbbb01", "s1", "sidecar"), Ctr("cccccccc01", "s2", "cart"),
                  Ctr("dddddddd01", "s4new", "nginx")};
  return s;
}

TEST(FindPod, ByNameInAnyNamespaceWithEveryContainerNewestAttemptFirst) {
  const auto r = FindPod(Node(), Q("checkout-7f9c4-x2z9q"), "n1");
  ASSERT_TRUE(r.match) << r.error.message;
  EXPECT_EQ(r.match->pod.id, "s1");
  ASSERT_EQ(r.match->containers.size(), 3u);
  EXPECT_EQ(r.match->containers[0].id, "aaaaaaaa02");  // app, attempt 1
  EXPECT_EQ(r.match->containers[1].id, "aaaaaaaa01");  // app, attempt 0
  EXPECT_EQ(r.match->containers[2].name, "sidecar");
}

TEST(FindPod, ContainerByName) {
  const auto r = FindPod(Node(), Q("checkout-7f9c4-x2z9q", "", "sidecar"), "n1");
  ASSERT_TRUE(r.match);
  ASSERT_EQ(r.match->containers.size(), 1u);
  EXPECT_EQ(r.match->containers[0].id, "bbbbbbbb01");
  const auto none = FindPod(Node(), Q("checkout-7f9c4-x2z9q", "", "db"), "");
  ASSERT_FALSE(none.match);
  EXPECT_EQ(none.error.kind, PodLookupError::Kind::kNoContainer);
  EXPECT_THAT(none.error.message, HasSubstr("containers: app, sidecar"));
}

TEST(FindPod, SameNameInTwoNamespacesNeedsNamespace) {
  const auto r = FindPod(Node(), Q("cart-0"), "n1");
  ASSERT_FALSE(r.match);
  EXPECT_EQ(r.error.kind, PodLookupError::Kind::kAmbiguous);
  EXPECT_THAT(r.error.candidates, ::testing::ElementsAre("shop/cart-0", "staging/cart-0"));
  EXPECT_THAT(r.error.message, HasSubstr("-n"));
  const auto shop = FindPod(Node(), Q("cart-0", "shop"), "n1");
  ASSERT_TRUE(shop.match);
  EXPECT_EQ(shop.match->pod.id, "s2");
}

TEST(FindPod, UnknownNameNamesTheNamespacesSearchedCloseMatchesAndTheNode) {
  const auto r = FindPod(Node(), Q("checkout"), "node-7");
  ASSERT_FALSE(r.match);
  EXPECT_EQ(r.error.kind, PodLookupError::Kind::kNotFound);
  EXPECT_THAT(r.error.message, HasSubstr("searched: shop, staging, web"));
  EXPECT_THAT(r.error.message, HasSubstr("shop/checkout-7f9c4-x2z9q"));
  EXPECT_THAT(r.error.message, HasSubstr("node-7"));
  EXPECT_THAT(r.error.message, HasSubstr("containerd 1.6.20"));
  EXPECT_THAT(r.error.message, HasSubstr("another node"));
  // In a namespace it is not in: says so, and where it is.
  const auto wrong = FindPod(Node(), Q("front", "shop"), "");
  ASSERT_FALSE(wrong.match);
  EXPECT_THAT(wrong.error.message, HasSubstr("in namespace \"shop\""));
  EXPECT_THAT(wrong.error.message, HasSubstr("runs in namespace web"));
}

TEST(FindPod, ReCreatedSandboxPrefersTheReadyOne) {
  const auto r = FindPod(Node(), Q("front"), "");
  ASSERT_TRUE(r.match);
  EXPECT_EQ(r.match->pod.id, "s4new");
  EXPECT_EQ(r.match->sandboxes_with_name, 2u);
  const auto by_uid = FindPod(Node(), Q("", "", "", "44444444-4444-4444-4444-444444444444"), "");
  ASSERT_TRUE(by_uid.match);
  EXPECT_EQ(by_uid.match->pod.id, "s4new");
}

TEST(FindPod, ByContainerIdPrefix) {
  const auto r = FindPod(Node(), Q("", "", "", "", "cccccc"), "");
  ASSERT_TRUE(r.match);
  EXPECT_EQ(r.match->pod.name, "cart-0");
  EXPECT_EQ(r.match->containers.at(0).name, "cart");
  const auto ambiguous = FindPod(Node(), Q("", "", "", "", "aaaaaaaa"), "");
  ASSERT_FALSE(ambiguous.match);
  EXPECT_EQ(ambiguous.error.kind, PodLookupError::Kind::kAmbiguous);
  EXPECT_EQ(FindPod(Node(), Q("", "", "", "", "aaa"), "").error.kind,
            PodLookupError::Kind::kBadQuery);
  EXPECT_EQ(FindPod(Node(), Q("", "", "", "", "ffffff"), "").error.kind,
            PodLookupError::Kind::kNotFound);
  EXPECT_EQ(FindPod(Node(), Q(), "").error.kind, PodLookupError::Kind::kBadQuery);
}

TEST(Cri, CloseMatchesAndSandboxes) {
  EXPECT_THAT(CloseMatches("chekout", {"shop/checkout", "shop/cart", "web/front"}),
              ::testing::ElementsAre("shop/checkout"));
  EXPECT_THAT(CloseMatches("cart", {"a/cart-0", "b/cart-1", "c/carts", "d/zzz"}),
              ::testing::ElementsAre("a/cart-0", "b/cart-1", "c/carts"));
  EXPECT_TRUE(CloseMatches("x", {"shop/checkout"}).empty());
  EXPECT_EQ(SandboxOfHandler("runsc"), "gvisor");
  EXPECT_EQ(SandboxOfHandler("gvisor"), "gvisor");
  EXPECT_EQ(SandboxOfHandler("kata-qemu"), "kata");
  EXPECT_EQ(SandboxOfHandler("wasmedge"), "wasm");
  EXPECT_EQ(SandboxOfHandler("runc"), "");
  EXPECT_EQ(SandboxOfHandler(""), "");
  EXPECT_EQ(CanonicalPodUid("11111111_1111_1111_1111_111111111111"),
            "11111111-1111-1111-1111-111111111111");
  EXPECT_EQ(CanonicalPodUid("not-a-uid"), "");
}

// ---- a cgroup hierarchy made of directories, and a CRI server served here ------------------

class CriServer final : public ::runtime::v1::RuntimeService::Service {
 public:
  grpc::Status Version(grpc::ServerContext*, const ::runtime::v1::VersionRequest*,
                       ::runtime::v1::VersionResponse* r) override {
    r->set_runtime_name("fake-cri");
    r->set_runtime_version("0.1");
    return grpc::Status::OK;
  }
  grpc::Status ListPodSandbox(grpc::ServerContext*, const ::runtime::v1::ListPodSandboxRequest*,
                              ::runtime::v1::ListPodSandboxResponse* r) override {
    ++lists;
    auto* p = r->add_items();
    p->set_id("sandbox1");
    p->mutable_metadata()->set_name("checkout-7f9c4-x2z9q");
    p->mutable_metadata()->set_namespace_("shop");
    p->mutable_metadata()->set_uid(kUid);
    p->set_state(::runtime::v1::SANDBOX_READY);
    p->set_runtime_handler("runsc");
    return grpc::Status::OK;
  }
  grpc::Status ListContainers(grpc::ServerContext*, const ::runtime::v1::ListContainersRequest*,
                              ::runtime::v1::ListContainersResponse* r) override {
    auto* c = r->add_containers();
    c->set_id(kCtr);
    c->set_pod_sandbox_id("sandbox1");
    c->mutable_metadata()->set_name("app");
    c->set_state(::runtime::v1::CONTAINER_RUNNING);
    return grpc::Status::OK;
  }
  grpc::Status PodSandboxStatus(grpc::ServerContext*,
                                const ::runtime::v1::PodSandboxStatusRequest* q,
                                ::runtime::v1::PodSandboxStatusResponse* r) override {
    if (q->pod_sandbox_id() != "sandbox1") return {grpc::StatusCode::NOT_FOUND, "no sandbox"};
    r->mutable_status()->mutable_network()->set_ip("10.88.0.7");
    return grpc::Status::OK;
  }
  static constexpr const char* kUid = "0a1b2c3d-0000-4000-8000-00000000abcd";
  static constexpr const char* kCtr =
      "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
  std::atomic<int> lists{0};
};

class CriFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("cri_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    socket_ = (dir_ / "cri.sock").string();
    grpc::ServerBuilder b;
    b.AddListeningPort("unix://" + socket_, grpc::InsecureServerCredentials());
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_);
    // A v2-like hierarchy: kubepods/burstable/pod<uid>/<container id>.
    root_ = dir_ / "cgroup";
    pod_dir_ = root_ / "kubepods" / "burstable" / (std::string("pod") + CriServer::kUid);
    ctr_dir_ = pod_dir_ / CriServer::kCtr;
    fs::create_directories(ctr_dir_);
    fs::create_directories(pod_dir_ / "sandbox1");
    mounts_.v2_root = root_.string();
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    fs::remove_all(dir_);
  }
  static std::uint64_t Inode(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(stat(p.c_str(), &st), 0);
    return st.st_ino;
  }

  fs::path dir_, root_, pod_dir_, ctr_dir_;
  std::string socket_;
  CriServer service_;
  std::unique_ptr<grpc::Server> server_;
  CgroupMounts mounts_;
};

TEST_F(CriFixture, ClientListsPodsAndContainersAndPodIp) {
  auto client = CriClient::Connect(socket_);
  ASSERT_TRUE(client) << client.error().message;
  auto snap = (*client)->Snapshot();
  ASSERT_TRUE(snap) << snap.error().message;
  EXPECT_EQ(snap->runtime_name, "fake-cri");
  ASSERT_EQ(snap->pods.size(), 1u);
  EXPECT_EQ(snap->pods[0].namespace_name, "shop");
  EXPECT_EQ(snap->pods[0].runtime_handler, "runsc");
  EXPECT_TRUE(snap->pods[0].ready);
  ASSERT_EQ(snap->containers.size(), 1u);
  EXPECT_EQ(snap->containers[0].name, "app");
  EXPECT_EQ(snap->containers[0].state, "running");
  auto ip = (*client)->PodIp("sandbox1");
  ASSERT_TRUE(ip);
  EXPECT_EQ(*ip, "10.88.0.7");
  EXPECT_FALSE((*client)->PodIp("nope"));
}

TEST_F(CriFixture, ConnectNamesWhatFailed) {
  auto none = CriClient::Connect((dir_ / "missing.sock").string());
  ASSERT_FALSE(none);
  EXPECT_THAT(none.error().message, HasSubstr("missing.sock (no socket)"));
}

TEST_F(CriFixture, FindsPodAndContainerDirectories) {
  const auto pod = FindPodDirs(mounts_, CriServer::kUid);
  EXPECT_EQ(pod.v2_dir, pod_dir_.string());
  EXPECT_EQ(pod.v1_cpu_dir, "");
  const auto ctr = FindContainerDirs(mounts_, CriServer::kCtr);
  EXPECT_EQ(ctr.v2_dir, ctr_dir_.string());
  EXPECT_TRUE(FindPodDirs(mounts_, "99999999-9999-9999-9999-999999999999").empty());
  EXPECT_TRUE(FindContainerDirs(mounts_, "").empty());
}

TEST_F(CriFixture, ResolverNamesCgroupsFromTheRuntimeWithoutWaitingOnTheSpanPath) {
  WorkloadIndex::Options o;
  o.background = false;  // builds only when asked here
  o.cri_endpoint = socket_;
  o.min_rebuild = std::chrono::hours(1);
  correlator::CgroupResolver resolver(mounts_, o, std::chrono::milliseconds(0));
  const std::uint64_t ctr_id = Inode(ctr_dir_);
  // The span path never builds: before any build the id is unknown, named by its number.
  const auto early = resolver.Describe(ctr_id, false);
  EXPECT_EQ(early.cgroup, "v2-id:" + std::to_string(ctr_id));
  EXPECT_EQ(early.pod_name, "");
  EXPECT_EQ(resolver.index().builds(), 0u);
  // The drain thread builds on a miss, and names the container.
  const auto t = resolver.DescribeOrIndex(ctr_id, false);
  EXPECT_EQ(resolver.index().builds(), 1u);
  EXPECT_EQ(t.pod_uid, CriServer::kUid);
  EXPECT_EQ(t.container_id, CriServer::kCtr);
  EXPECT_EQ(t.namespace_name, "shop");
  EXPECT_EQ(t.pod_name, "checkout-7f9c4-x2z9q");
  EXPECT_EQ(t.container_name, "app");
  EXPECT_EQ(t.sandbox, "gvisor");
  // The pod-level cgroup: pod names, no container.
  const auto p = resolver.Describe(Inode(pod_dir_), false);
  EXPECT_EQ(p.pod_name, "checkout-7f9c4-x2z9q");
  EXPECT_EQ(p.container_name, "");
  // A cgroup born after the build: a second miss is rate-limited (min_rebuild), not rebuilt.
  const fs::path late = pod_dir_ / "late";
  fs::create_directories(late);
  const auto l = resolver.DescribeOrIndex(Inode(late), false);
  EXPECT_EQ(resolver.index().builds(), 1u);
  EXPECT_EQ(l.cgroup, "v2-id:" + std::to_string(Inode(late)));
  EXPECT_EQ(service_.lists.load(), 1);
}

// The span path: a cgroup born after the last build is named at once (the lookup waits for the
// rebuild it asked for, bounded); an id that no longer exists is asked for once, not per lookup.
TEST_F(CriFixture, SpanPathWaitsForOneRebuildPerNewWorkload) {
  WorkloadIndex::Options o;
  o.cri_endpoint = socket_;
  o.min_rebuild = std::chrono::milliseconds(50);
  o.refresh = std::chrono::hours(1);
  correlator::CgroupResolver resolver(mounts_, o, std::chrono::seconds(5));
  for (int i = 0; i < 500 && resolver.index().builds() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(resolver.index().builds(), 1u);
  const fs::path late = pod_dir_ / "late2";
  fs::create_directories(late);
  const auto t = resolver.Describe(Inode(late), false);
  EXPECT_EQ(t.cgroup, "/kubepods/burstable/pod" + std::string(CriServer::kUid) + "/late2");
  EXPECT_EQ(t.pod_name, "checkout-7f9c4-x2z9q");
  const std::uint64_t after_new = resolver.index().builds();
  // An id no cgroup has: one rebuild, then it is known gone.
  const std::uint64_t ghost = 0x7fffffffffffull;
  EXPECT_EQ(resolver.Describe(ghost, false).cgroup, "v2-id:" + std::to_string(ghost));
  const std::uint64_t after_ghost = resolver.index().builds();
  EXPECT_EQ(after_ghost, after_new + 1);
  EXPECT_TRUE(resolver.index().Current()->Gone(ghost, false));
  for (int i = 0; i < 5; ++i) resolver.Describe(ghost, false);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(resolver.index().builds(), after_ghost);
}

TEST_F(CriFixture, WithoutARuntimePodsAreNamedByUidOnly) {
  WorkloadIndex::Options o;
  o.background = false;
  o.cri_endpoint = (dir_ / "missing.sock").string();
  correlator::CgroupResolver resolver(mounts_, o);
  const auto t = resolver.DescribeOrIndex(Inode(ctr_dir_), false);
  EXPECT_EQ(t.pod_uid, CriServer::kUid);
  EXPECT_EQ(t.container_id, CriServer::kCtr);
  EXPECT_EQ(t.pod_name, "");
  EXPECT_EQ(t.namespace_name, "");
}

}  // namespace
}  // namespace isoscope::identity
