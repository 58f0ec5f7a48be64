// <sys/pidfd.h>, <sys/syscall.h>: pidfd_open and pidfd_getfd through libc's syscall(2) (glibc wraps them
// only from 2.36). Both numbers are in the unified table added in Linux 5.1, so the same on every 64-bit
// architecture (x86_64, aarch64, ...). Names as Tmds.LibC's Tmds.Linux.LibC spells them.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Linux.Interop;

internal static unsafe partial class LibC
{
    /// <summary>pidfd_open(pid_t pid, unsigned int flags), Linux 5.3: an fd that becomes readable when the process exits.</summary>
    public const long SYS_pidfd_open = 434;

    /// <summary>
    /// pidfd_getfd(int pidfd, int targetfd, unsigned int flags), Linux 5.6: a duplicate (O_CLOEXEC) of the other
    /// process's targetfd. Needs PTRACE_MODE_ATTACH_REALCREDS over it: EPERM under Yama ptrace_scope &gt;= 1
    /// (unless an ancestor), other users, or a seccomp filter; ENOSYS on older kernels.
    /// </summary>
    public const long SYS_pidfd_getfd = 438;

    /// <summary>syscall(SYS_pidfd_open, pid, flags): the pidfd, or -1 with errno (ESRCH: no such process).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, int pid, uint flags);

    /// <summary>syscall(SYS_pidfd_getfd, pidfd, targetfd, flags): the new fd, or -1 with errno (EBADF: no such fd there; ESRCH: exited).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, int pidfd, int targetfd, uint flags);

    /// <summary>pidfd_send_signal(int pidfd, int sig, siginfo_t *info, unsigned int flags), Linux 5.1.</summary>
    public const long SYS_pidfd_send_signal = 424;

    /// <summary>syscall(SYS_pidfd_send_signal, pidfd, sig, info, flags): 0, or -1 with errno (ESRCH: the process exited).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "syscall", SetLastError = true)]
    public static partial long syscall(long number, int pidfd, int sig, nint info, uint flags);

    public static int pidfd_open(int pid, uint flags) => (int)syscall(SYS_pidfd_open, pid, flags);

    public static int pidfd_send_signal(int pidfd, int sig) => (int)syscall(SYS_pidfd_send_signal, pidfd, sig, 0, 0u);

    public static int pidfd_getfd(int pidfd, int targetfd, uint flags) => (int)syscall(SYS_pidfd_getfd, pidfd, targetfd, flags);
}
