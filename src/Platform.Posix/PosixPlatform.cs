/*-------------------------------------------------------------------------
 * PosixPlatform.cs
 *   The backend for Unix systems other than Linux (and selectable on Linux):
 *   shm_open + mmap segments, kill(pid, 0) liveness, POSIX semaphores
 *   (unnamed process-shared, or named where the OS has no unnamed ones),
 *   FIFO latches with poll() wait sets, a lifeline FIFO, SIGUSR1 interrupts.
 *-------------------------------------------------------------------------
 */
[assembly: PgIpc.Platform.PgIpcPlatform(typeof(PgIpc.Platform.Posix.PosixPlatform))]

namespace PgIpc.Platform.Posix;

/// <summary>Portable POSIX backend.</summary>
public sealed class PosixPlatform : IPgIpcPlatform
{
    /// <inheritdoc/>
    public string Name => "posix";

    /// <inheritdoc/>
    public bool IsSupported => OperatingSystem.IsLinux() || OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD();

    /// <inheritdoc/>
    public ISharedMemoryProvider SharedMemory { get; } = new PosixSharedMemory();

    /// <inheritdoc/>
    public IProcessServices Processes { get; } = new UnixProcessServices();

    /// <inheritdoc/>
    public IProcSemaphoreProvider Semaphores { get; } = new PosixSemaphoreProvider();

    /// <inheritdoc/>
    public ILatchProvider Latches { get; } = new PosixLatchProvider();

    /// <inheritdoc/>
    public IDsmProvider Dsm { get; } = new PosixDsmProvider();

    /// <inheritdoc/>
    public IFileSync Files { get; } = new UnixFileSync();
}
