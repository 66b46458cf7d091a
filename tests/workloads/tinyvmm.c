// A tiny VMM written directly against the /dev/kvm ioctls: one VM, one vCPU, run on the main
// thread (so the process is single-threaded while the guest runs; its comm is "CPU 0/KVM", as
// QEMU names its vCPU threads). Used by the hypervisor/paravirt tests (issue #12): on this
// host, whose KVM runs guests only through its instruction emulator, and in the Debian 6.1
// guest under QEMU with nested KVM (AMD SVM emulated by TCG; tests/vm/guest/scenarios/70-kvm.sh).
//
//   tinyvmm --exits N --delay-us D [--delay-mode spin|sleep] [--guest-loops L] [--halt-ms H]
//           [--cpu C] [--start-delay-ms MS] [--wait-start-fd FD] [--events-fd FD] [--json]
//
// The guest (16-bit real mode at 0x1000, CS base 0; no BIOS, no stack, no interrupts) runs
//     N times  out 0x10, al      each is one KVM_EXIT_IO; the VMM waits D µs before the next
//                                KVM_RUN (spin: busy-wait on CLOCK_MONOTONIC; sleep: nanosleep)
//     L times  dec ecx; jnz      a pure CPU loop, no exits
//              out 0x11, al      marks the end of the loop
//              hlt               without --halt-ms: KVM_EXIT_HLT, the VMM ends; with --halt-ms H
//                                an in-kernel irqchip (KVM_CREATE_IRQCHIP) keeps HLT in the
//                                kernel and a POSIX timer's signal (SIGUSR1 to this thread,
//                                unblocked only inside KVM_RUN via KVM_SET_SIGNAL_MASK) ends the
//                                halt after H ms: KVM_RUN returns -1/EINTR (KVM_EXIT_INTR).
// One iteration is two instructions. Measured per iteration: ~0.3 ns natively (one cycle),
// ~7 ns under QEMU's TCG with nested SVM (the 6.1 guest), ~1.5 us on this host, whose KVM
// emulates every guest instruction (kvm_emulate_insn each). A loop of ~0.1 s natively (300M)
// would take ~2 s under TCG and ~7 minutes here, so the default L is 100000: ~0.15 s here,
// under 1 ms under TCG, ~30 us natively. For a loop of a given duration choose L from a
// calibration run (--exits 0 --guest-loops L prints guest_loop_s), as 70-kvm.sh does.
//
// Options to let a tracer attach before the first exit: --start-delay-ms MS sleeps, and
// --wait-start-fd FD reads one byte (or EOF) from FD, after the VM is set up and before the
// first KVM_RUN. --events-fd FD gets a line "EVENT MONOTONIC_S" at run_start, loop_start (the
// KVM_RUN after the last port-0x10 exit), loop_end (the port-0x11 exit) and end.
//
// Output (one line; --json as below, else a human line):
//   {"pid","tid","io_exits" (port 0x10 exits), "exits_total" (every return of KVM_RUN),
//    "vmm_handling_s" (time in user space between a KVM_RUN return and the next KVM_RUN),
//    "delay_s" (the delays actually waited), "guest_loop_s" (loop_start to the 0x11 exit),
//    "halt_s" (KVM_RUN blocked in HLT, 0 without --halt-ms), "wall_s" (first KVM_RUN to the
//    end), "exit_reasons":{"io" (N + 1: the loop-end exit is KVM_EXIT_IO too),"hlt","intr",
//    "other"}, "guest_loops", "exits_asked", "delay_us", "delay_mode", "irqchip", "cpu",
//    "t_run_start","t_loop_start","t_loop_end","t_end" (CLOCK_MONOTONIC seconds)}
// Under KVM each port exit is also one in-kernel exit (kvm_exit reason io) before it reaches
// user space (kvm_userspace_exit reason KVM_EXIT_IO): N + 1 of each.
// Errors (no /dev/kvm, an ioctl that fails, an unexpected exit) print the ioctl and errno on
// stderr and exit 2.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GUEST_MEM_SIZE 0x10000
#define CODE_ADDR 0x1000
#define PORT_EXIT 0x10
#define PORT_LOOP_END 0x11
#define DEFAULT_LOOPS 100000UL

static void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("tinyvmm: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

// An ioctl that must succeed: on failure names it and errno, exit 2.
static int xioctl(int fd, unsigned long req, const char* name, void* arg) {
  int r = ioctl(fd, req, arg);
  if (r < 0) die("ioctl %s failed: %s (errno %d)", name, strerror(errno), errno);
  return r;
}
#define IOCTL(fd, req, arg) xioctl((fd), (req), #req, (void*)(arg))

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_signal(int sig) { (void)sig; }

static int events_fd = -1;
static void event(const char* name, double t) {
  if (events_fd < 0) return;
  char buf[96];
  int n = snprintf(buf, sizeof buf, "%s %.6f\n", name, t);
  if (write(events_fd, buf, (size_t)n) < 0) {
    // A closed reader is not the VMM's problem.
  }
}

// Waits until t0 + us: busy (spin) or sleeping; returns the time actually waited.
static double wait_delay(double t0, long us, int spin) {
  if (us <= 0) return 0;
  double end = t0 + us / 1e6;
  if (spin) {
    while (now() < end) {
    }
  } else {
    struct timespec ts = {(time_t)end, (long)((end - (time_t)end) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
  }
  return now() - t0;
}

static size_t emit(uint8_t* p, const uint8_t* bytes, size_t n) {
  memcpy(p, bytes, n);
  return n;
}

// Writes the guest program (16-bit real mode) at p; see the comment at the top.
static void write_guest(uint8_t* p, uint32_t exits, uint32_t loops) {
  size_t o = 0;
  // mov ecx, exits ; test ecx, ecx ; jz +6 (over the exit loop)
  o += emit(p + o, (const uint8_t[]){0x66, 0xB9}, 2);
  memcpy(p + o, &exits, 4), o += 4;
  o += emit(p + o, (const uint8_t[]){0x66, 0x85, 0xC9, 0x74, 0x06}, 5);
  // l1: out 0x10, al ; dec ecx ; jnz l1
  o += emit(p + o, (const uint8_t[]){0xE6, PORT_EXIT, 0x66, 0x49, 0x75, 0xFA}, 6);
  // mov ecx, loops ; test ecx, ecx ; jz +4 (over the CPU loop)
  o += emit(p + o, (const uint8_t[]){0x66, 0xB9}, 2);
  memcpy(p + o, &loops, 4), o += 4;
  o += emit(p + o, (const uint8_t[]){0x66, 0x85, 0xC9, 0x74, 0x04}, 5);
  // l2: dec ecx ; jnz l2
  o += emit(p + o, (const uint8_t[]){0x66, 0x49, 0x75, 0xFC}, 4);
  // out 0x11, al ; h: hlt ; jmp h
  o += emit(p + o, (const uint8_t[]){0xE6, PORT_LOOP_END, 0xF4, 0xEB, 0xFD}, 5);
}

static void usage(void) {
  fprintf(stderr,
          "usage: tinyvmm --exits N --delay-us D [--delay-mode spin|sleep] [--guest-loops L]\n"
          "               [--halt-ms H] [--cpu C] [--start-delay-ms MS] [--wait-start-fd FD]\n"
          "               [--events-fd FD] [--json]\n");
  exit(2);
}

static long num(const char* opt, const char* v, long lo, long hi) {
  char* end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || end == v || x < lo || x > hi)
    die("%s: expected an integer in [%ld, %ld], got '%s'", opt, lo, hi, v);
  return x;
}

int main(int argc, char** argv) {
  long exits = -1, delay_us = -1, halt_ms = 0, cpu = -1, start_delay_ms = 0, wait_fd = -1;
  unsigned long loops = DEFAULT_LOOPS;
  int spin = 1, json = 0;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--json")) {
      json = 1;
      continue;
    }
    if (!v) usage();
    ++i;
    if (!strcmp(a, "--exits")) exits = num(a, v, 0, 0x7fffffff);
    else if (!strcmp(a, "--delay-us")) delay_us = num(a, v, 0, 60000000);
    else if (!strcmp(a, "--delay-mode")) {
      if (!strcmp(v, "spin")) spin = 1;
      else if (!strcmp(v, "sleep")) spin = 0;
      else usage();
    } else if (!strcmp(a, "--guest-loops")) loops = (unsigned long)num(a, v, 0, 0xffffffffL);
    else if (!strcmp(a, "--halt-ms")) halt_ms = num(a, v, 0, 3600000);
    else if (!strcmp(a, "--cpu")) cpu = num(a, v, 0, CPU_SETSIZE - 1);
    else if (!strcmp(a, "--start-delay-ms")) start_delay_ms = num(a, v, 0, 3600000);
    else if (!strcmp(a, "--wait-start-fd")) wait_fd = num(a, v, 0, 1 << 20);
    else if (!strcmp(a, "--events-fd")) events_fd = (int)num(a, v, 0, 1 << 20);
    else usage();
  }
  if (exits < 0 || delay_us < 0) usage();

  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
      die("sched_setaffinity(CPU %ld): %s (errno %d)", cpu, strerror(errno), errno);
  }
  prctl(PR_SET_NAME, "CPU 0/KVM", 0, 0, 0);

  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm: %s (errno %d)", strerror(errno), errno);
  int api = IOCTL(kvm, KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION) die("KVM_GET_API_VERSION: %d, expected %d", api, KVM_API_VERSION);
  int vm = IOCTL(kvm, KVM_CREATE_VM, 0);
  // VMX without unrestricted guest needs a TSS for real mode; a no-op elsewhere.
  if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_SET_TSS_ADDR) > 0)
    IOCTL(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL);

  uint8_t* mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) die("mmap guest memory: %s", strerror(errno));
  write_guest(mem + CODE_ADDR, (uint32_t)exits, (uint32_t)loops);
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_MEM_SIZE,
      .userspace_addr = (uint64_t)(uintptr_t)mem};
  IOCTL(vm, KVM_SET_USER_MEMORY_REGION, &region);

  // With --halt-ms, HLT must block in the kernel: that needs the in-kernel local APIC, which
  // KVM_CREATE_IRQCHIP creates (before the vCPU). Without it HLT exits to user space.
  int irqchip = halt_ms > 0;
  if (irqchip) {
    if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP) <= 0)
      die("--halt-ms needs KVM_CAP_IRQCHIP, which this KVM does not offer");
    IOCTL(vm, KVM_CREATE_IRQCHIP, 0);
  }

  int vcpu = IOCTL(vm, KVM_CREATE_VCPU, 0);
  int run_size = IOCTL(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run* run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run: %s", strerror(errno));

  struct kvm_sregs sregs;
  IOCTL(vcpu, KVM_GET_SREGS, &sregs);
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  IOCTL(vcpu, KVM_SET_SREGS, &sregs);
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = CODE_ADDR;
  regs.rflags = 0x2;
  IOCTL(vcpu, KVM_SET_REGS, &regs);

  // The halt's wake-up: SIGUSR1 from a POSIX timer aimed at this thread. Blocked in user space,
  // unblocked only inside KVM_RUN (KVM_SET_SIGNAL_MASK), so it can only interrupt the guest;
  // one that fires early stays pending and makes the next KVM_RUN return EINTR at once.
  timer_t timer;
  if (irqchip) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, in_run;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &in_run);
    sigdelset(&in_run, SIGUSR1);
    struct kvm_signal_mask* mask = malloc(sizeof *mask + 8);
    if (!mask) die("malloc: %s", strerror(errno));
    mask->len = 8;  // the kernel's sigset size on x86-64
    memcpy(mask->sigset, &in_run, 8);
    IOCTL(vcpu, KVM_SET_SIGNAL_MASK, mask);
    free(mask);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGUSR1;
#ifdef sigev_notify_thread_id
    sev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
#else
    sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
#endif
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer) < 0)
      die("timer_create: %s (errno %d)", strerror(errno), errno);
  }

  if (start_delay_ms > 0) {
    struct timespec ts = {start_delay_ms / 1000, (start_delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
  }
  if (wait_fd >= 0) {
    char c;
    while (read((int)wait_fd, &c, 1) < 0 && errno == EINTR) {
    }
  }

  long io_exits = 0, exits_total = 0, n_io = 0, n_hlt = 0, n_intr = 0, n_other = 0;
  double vmm_s = 0, delay_s = 0, halt_s = 0;
  double t_run_start = now(), t_loop_start = 0, t_loop_end = 0, t_halt_start = 0;
  event("run_start", t_run_start);
  if (exits == 0) {
    t_loop_start = t_run_start;
    event("loop_start", t_loop_start);
  }
  int done = 0, halting = 0;
  double t_enter = t_run_start;
  while (!done) {
    int r = ioctl(vcpu, KVM_RUN, 0);
    int err = errno;
    double t_ret = now();
    ++exits_total;
    if (r < 0) {
      if (err == EINTR || err == EAGAIN) {
        ++n_intr;
        if (halting) {
          halt_s = t_ret - t_halt_start;
          siginfo_t si;
          struct timespec zero = {0, 0};
          sigset_t s;
          sigemptyset(&s);
          sigaddset(&s, SIGUSR1);
          sigtimedwait(&s, &si, &zero);  // consume the pending wake-up
          done = 1;
          break;
        }
        t_enter = now();
        vmm_s += t_enter - t_ret;
        continue;
      }
      die("ioctl KVM_RUN failed: %s (errno %d)", strerror(err), err);
    }
    switch (run->exit_reason) {
      case KVM_EXIT_IO:
        ++n_io;
        if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == PORT_EXIT) {
          ++io_exits;
          delay_s += wait_delay(t_ret, delay_us, spin);
          if (io_exits == exits) {
            t_loop_start = now();
            event("loop_start", t_loop_start);
          }
        } else if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == PORT_LOOP_END) {
          t_loop_end = t_ret;
          event("loop_end", t_loop_end);
          if (irqchip) {
            struct itimerspec its = {{0, 0}, {halt_ms / 1000, (halt_ms % 1000) * 1000000L}};
            if (timer_settime(timer, 0, &its, NULL) < 0)
              die("timer_settime: %s (errno %d)", strerror(errno), errno);
            halting = 1;
          }
        }
        break;
      case KVM_EXIT_HLT:
        ++n_hlt;
        done = 1;
        break;
      case KVM_EXIT_INTR:
        ++n_intr;
        break;
      case KVM_EXIT_FAIL_ENTRY:
        die("KVM_RUN: KVM_EXIT_FAIL_ENTRY, hardware_entry_failure_reason 0x%llx",
            (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        break;
      case KVM_EXIT_INTERNAL_ERROR:
        die("KVM_RUN: KVM_EXIT_INTERNAL_ERROR, suberror %u", run->internal.suberror);
        break;
      case KVM_EXIT_SHUTDOWN:
        die("KVM_RUN: KVM_EXIT_SHUTDOWN (guest triple fault)");
        break;
      default:
        ++n_other;
        if (n_other > 1000) die("KVM_RUN: too many unexpected exits (last reason %u)",
                                run->exit_reason);
        break;
    }
    if (done) break;
    t_enter = now();
    vmm_s += t_enter - t_ret;
    if (halting) t_halt_start = t_enter;
  }
  double t_end = now();
  event("end", t_end);
  double loop_s = t_loop_end > 0 && t_loop_start > 0 ? t_loop_end - t_loop_start : 0;

  if (json) {
    printf("{\"pid\":%d,\"tid\":%ld,\"io_exits\":%ld,\"exits_total\":%ld,\"vmm_handling_s\":%.6f,"
           "\"delay_s\":%.6f,\"guest_loop_s\":%.6f,\"halt_s\":%.6f,\"wall_s\":%.6f,"
           "\"exit_reasons\":{\"io\":%ld,\"hlt\":%ld,\"intr\":%ld,\"other\":%ld},"
           "\"guest_loops\":%lu,\"exits_asked\":%ld,\"delay_us\":%ld,\"delay_mode\":\"%s\","
           "\"irqchip\":%s,\"cpu\":%ld,\"t_run_start\":%.6f,\"t_loop_start\":%.6f,"
           "\"t_loop_end\":%.6f,\"t_end\":%.6f}\n",
           getpid(), (long)syscall(SYS_gettid), io_exits, exits_total, vmm_s, delay_s, loop_s,
           halt_s, t_end - t_run_start, n_io, n_hlt, n_intr, n_other, loops, exits, delay_us,
           spin ? "spin" : "sleep", irqchip ? "true" : "false", cpu, t_run_start, t_loop_start,
           t_loop_end, t_end);
  } else {
    printf("tinyvmm pid %d: %ld io exits (%ld in all: io %ld, hlt %ld, intr %ld), vmm handling "
           "%.4f s (delays %.4f s), guest loop %.4f s (%lu iterations), halt %.4f s, wall %.4f s\n",
           getpid(), io_exits, exits_total, n_io, n_hlt, n_intr, vmm_s, delay_s, loop_s, loops,
           halt_s, t_end - t_run_start);
  }
  fflush(stdout);
  return 0;
}
