// <sys/pidfd.h>, <sys/syscall.h>: pidfd_open, pidfd_getfd and pidfd_send_signal, which Tmds.LibC 0.5.0 does
// not bind (nor name their numbers), through its syscall(2) binding (glibc wraps them only from 2.36). The
// numbers are in the unified table added in Linux 5.1, so the same on every 64-bit architecture (x86_64,
// aarch64, ...). Names as the kernel spells them.
using TmdsLibC = Tmds.Linux.LibC;

namespace PgIpc.Platform.Linux.Interop;

internal static unsafe partial class LibC
{
    /// <summary>pidfd_open(pid_t pid, unsigned int flags), Linux 5.3: an fd that becomes readable when the process exits.</summary>
    public const int SYS_pidfd_open = 434;

    /// <summary>
    /// pidfd_getfd(int pidfd, int targetfd, unsigned int flags), Linux 5.6: a duplicate (O_CLOEXEC) of the other
    /// process's targetfd. Needs PTRACE_MODE_ATTACH_REALCREDS over it: EPERM under Yama ptrace_scope &gt;= 1
    /// (unless an ancestor), other users, or a seccomp filter; ENOSYS on older kernels.
    /// </summary>
    public const int SYS_pidfd_getfd = 438;

    /// <summary>pidfd_send_signal(int pidfd, int sig, siginfo_t *info, unsigned int flags), Linux 5.1.</summary>
    public const int SYS_pidfd_send_signal = 424;

    /// <summary>The pidfd, or -1 with errno (ESRCH: no such process).</summary>
    public static int pidfd_open(int pid, uint flags) => (int)TmdsLibC.syscall(SYS_pidfd_open, pid, flags);

    /// <summary>0, or -1 with errno (ESRCH: the process exited).</summary>
    public static int pidfd_send_signal(int pidfd, int sig) => (int)TmdsLibC.syscall(SYS_pidfd_send_signal, pidfd, sig, (void*)null, 0u);

    /// <summary>The new fd, or -1 with errno (EBADF: no such fd there; ESRCH: exited).</summary>
    public static int pidfd_getfd(int pidfd, int targetfd, uint flags) => (int)TmdsLibC.syscall(SYS_pidfd_getfd, pidfd, targetfd, flags);
}
