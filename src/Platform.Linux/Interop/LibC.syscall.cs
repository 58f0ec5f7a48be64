// <sys/syscall.h>, <linux/futex.h>, <time.h>: the futex system call through libc's syscall(2), and the
// struct timespec it takes. glibc has no futex() wrapper. Names as Tmds.LibC's Tmds.Linux.LibC spells them.
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

    /// <summary>struct timespec on 64-bit Linux: 16 bytes, tv_sec at 0, tv_nsec at 8.</summary>
#pragma warning disable CS8981 // the native name, kept exactly (a lower-case type name)
    [StructLayout(LayoutKind.Sequential)]
    public struct timespec
    {
        public long tv_sec;
        public long tv_nsec;
    }
#pragma warning restore CS8981

    /// <summary>
    /// long syscall(long number, ...), declared with the six futex arguments (uaddr, futex_op, val, timeout,
    /// uaddr2, val3). Returns -1 and sets errno on failure. FUTEX_WAIT: 0 when woken (or spuriously),
    /// EAGAIN when *uaddr != val, ETIMEDOUT after the relative timeout, EINTR on a signal. FUTEX_WAKE:
    /// the number of sleepers woken.
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, int* uaddr, int futex_op, int val, timespec* timeout, int* uaddr2, int val3);
}
