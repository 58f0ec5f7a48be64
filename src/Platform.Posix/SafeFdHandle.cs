/*-------------------------------------------------------------------------
 * SafeFdHandle.cs
 *   A file descriptor this process owns (eventfd, epoll, pidfd, FIFO end),
 *   closed on release. PgIpc opens every one with O_CLOEXEC (or the call's
 *   *_CLOEXEC flag): none is meant for a child process.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>Owns one fd; close on release.</summary>
internal sealed class SafeFdHandle : SafeHandle
{
    public SafeFdHandle(int fd) : base(-1, ownsHandle: true) => SetHandle(fd);

    public override bool IsInvalid => handle < 0;

    /// <summary>The descriptor number; valid while this handle is open.</summary>
    public int Fd => (int)handle;

    /// <summary>
    /// close(2). EINTR still releases the fd on Linux, macOS and the BSDs, so it is not retried (a retry could
    /// close a descriptor another thread just opened).
    /// </summary>
    protected override bool ReleaseHandle() => LibC.close((int)handle) == 0 || Marshal.GetLastPInvokeError() == Errno.EINTR;
}
