/*-------------------------------------------------------------------------
 * LinuxPlatform.cs
 *   The Linux backend: SysV main segment (kernel-counted attachments),
 *   kill(pid, 0) liveness, futex-word semaphores, eventfd latches woken
 *   through pidfd_getfd (SIGURG fallback) with epoll wait sets, a pidfd
 *   supervisor watch, SIGUSR1 interrupts.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform.Posix;

[assembly: PgIpc.Platform.PgIpcPlatform(typeof(PgIpc.Platform.Linux.LinuxPlatform))]

namespace PgIpc.Platform.Linux;

/// <summary>Linux backend.</summary>
public sealed class LinuxPlatform : IPgIpcPlatform
{
    /// <inheritdoc/>
    public string Name => "linux";

    /// <inheritdoc/>
    public bool IsSupported => OperatingSystem.IsLinux();

    /// <inheritdoc/>
    public ISharedMemoryProvider SharedMemory { get; } = new SysVSharedMemory();

    /// <inheritdoc/>
    public IProcessServices Processes { get; } = new UnixProcessServices();

    /// <inheritdoc/>
    public IProcSemaphoreProvider Semaphores { get; } = new FutexSemaphoreProvider();

    /// <inheritdoc/>
    public ILatchProvider Latches { get; } = new LinuxLatchProvider();

    /// <inheritdoc/>
    public IDsmProvider Dsm { get; } = new LinuxDsmProvider();

    /// <inheritdoc/>
    public IFileSync Files { get; } = new UnixFileSync();
}
