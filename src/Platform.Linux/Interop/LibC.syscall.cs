// <sys/syscall.h>, <linux/futex.h>: the futex system call through libc's syscall(2). glibc has no futex()
// wrapper and Tmds.LibC 0.5.0 names no SYS_futex, so the numbers are ours.
//
// The binding is ours too, not Tmds.Linux.LibC.syscall, because Tmds.LibC costs on this hot path (LWLock
// sleep and wake-up). Its [DllImport(SetLastError = true)] goes through a runtime-generated IL stub that
// saves errno; this [LibraryImport] is a blittable P/Invoke the JIT inlines, with the errno save written
// around it by the source generator. Measured with `perf -- bindings` (Platform/BindingAbHarness.cs: the two
// bindings in alternating blocks of 2000 calls, 200 pairs, median per call), FUTEX_WAKE with no waiter,
// three runs on 2026-12-03 12:32-12:33 UTC on the 2-vCPU VM at load 43: ours 424.1 / 410.6 / 372.0 ns,
// Tmds.LibC 443.6 / 432.4 / 389.2 ns, paired ratio 1.037 / 1.057 / 1.038 (about +17 ns a call).
// The timespec is Tmds.LibC's (a struct costs nothing; it is laid out per architecture).
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Linux.Interop;

internal static unsafe partial class LibC
{
    /// <summary>
    /// SYS_futex for this architecture, chosen once: 202 on x86_64, 98 on the asm-generic table (aarch64,
    /// riscv64, loongarch64), 221 on ppc64le, 238 on s390x; -1 where unsupported (the 32-bit ABIs, whose
    /// timespec has a 32-bit tv_sec and which would need futex_time64).
    /// </summary>
    public static readonly long SYS_futex = RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 202,
        Architecture.Arm64 or Architecture.RiscV64 or Architecture.LoongArch64 => 98,
        Architecture.Ppc64le => 221,
        Architecture.S390x => 238,
        _ => -1,
    };

    /// <summary>Sleep while *uaddr == val (shared: keyed by the physical page, so other processes can wake it).</summary>
    public const int FUTEX_WAIT = 0;
    /// <summary>Wake up to val sleepers on uaddr.</summary>
    public const int FUTEX_WAKE = 1;
    // FUTEX_PRIVATE_FLAG (128) is never used: waiter and waker are different processes mapping the same memory.

    /// <summary>
    /// long syscall(long number, ...), declared with the six futex arguments (uaddr, futex_op, val, timeout,
    /// uaddr2, val3). Returns -1 and sets errno on failure. FUTEX_WAIT: 0 when woken (or spuriously),
    /// EAGAIN when *uaddr != val, ETIMEDOUT after the relative timeout, EINTR on a signal. FUTEX_WAKE:
    /// the number of sleepers woken.
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, int* uaddr, int futex_op, int val, Tmds.Linux.timespec* timeout, int* uaddr2, int val3);
}
