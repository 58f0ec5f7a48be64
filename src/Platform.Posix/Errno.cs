/*-------------------------------------------------------------------------
 * Errno.cs
 *   errno capture and mapping to exceptions that name the call, in one place.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix;

/// <summary>errno values PgIpc reacts to (the same on Linux, macOS and the BSDs for these).</summary>
internal static class Errno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int ESRCH = 3;
    public const int EINTR = 4;
    /// <summary>open(O_WRONLY | O_NONBLOCK) of a FIFO nobody has open for reading.</summary>
    public const int ENXIO = 6;
    public const int EBADF = 9;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EEXIST = 17;
    public const int EINVAL = 22;
    public const int ENFILE = 23;
    public const int EMFILE = 24;
    public const int EFBIG = 27;
    public const int ENOSPC = 28;
    /// <summary>write to a pipe or FIFO with no reader (SIGPIPE is ignored by the .NET runtime).</summary>
    public const int EPIPE = 32;
    public static int EIDRM => OperatingSystem.IsLinux() ? 43 : 82;
    public static int ENAMETOOLONG => OperatingSystem.IsLinux() ? 36 : 63;
    /// <summary>open(O_NOFOLLOW) of a symbolic link (also too many links in a path).</summary>
    public static int ELOOP => OperatingSystem.IsLinux() ? 40 : 62;
    /// <summary>Also EWOULDBLOCK: sem_trywait found the count at zero; futex FUTEX_WAIT found the word changed.</summary>
    public static int EAGAIN => OperatingSystem.IsLinux() ? 11 : 35;
    public static int ETIMEDOUT => OperatingSystem.IsLinux() ? 110 : 60;
    /// <summary>sem_init on macOS: no unnamed semaphores.</summary>
    public static int ENOSYS => OperatingSystem.IsLinux() ? 38 : 78;
    /// <summary>sem_init with pshared = 1 where process-shared unnamed semaphores are not supported.</summary>
    public static int ENOTSUP => OperatingSystem.IsLinux() ? 95 : 45;

    /// <summary>errno of the last P/Invoke with SetLastError = true, read at once.</summary>
    public static int Last => Marshal.GetLastPInvokeError();

    public static string Name(int errno)
    {
        if (errno == EIDRM) return "EIDRM";
        if (errno == ENAMETOOLONG) return "ENAMETOOLONG";
        if (errno == ELOOP) return "ELOOP";
        if (errno == EAGAIN) return "EAGAIN";
        if (errno == ETIMEDOUT) return "ETIMEDOUT";
        if (errno == ENOSYS) return "ENOSYS";
        if (errno == ENOTSUP) return "ENOTSUP";
        return errno switch
        {
            EPERM => "EPERM", ENOENT => "ENOENT", ESRCH => "ESRCH", EINTR => "EINTR", ENXIO => "ENXIO", EBADF => "EBADF",
            ENOMEM => "ENOMEM", EACCES => "EACCES", EEXIST => "EEXIST", EINVAL => "EINVAL",
            ENFILE => "ENFILE", EMFILE => "EMFILE", EFBIG => "EFBIG", ENOSPC => "ENOSPC", EPIPE => "EPIPE",
            _ => "errno " + errno,
        };
    }

    /// <summary>An exception naming the call, errno's symbol and the system's message, plus what was being done.</summary>
    public static PgIpcOsException Exception(string call, int errno, string detail)
    {
        string msg = Marshal.GetPInvokeErrorMessage(errno);
        return new PgIpcOsException(call, errno, Name(errno), detail.Length > 0 ? $"{msg}; {detail}" : msg);
    }
}
