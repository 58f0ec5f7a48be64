/*-------------------------------------------------------------------------
 * WindowsPlatform.cs
 *   The Windows backend: paging-file sections, OpenProcess liveness, named
 *   semaphore objects, named auto-reset events for latches and interrupts,
 *   WaitForMultipleObjects wait sets.
 *   Tested under Wine on Linux (see .ci/run).
 *-------------------------------------------------------------------------
 */
[assembly: PgIpc.Platform.PgIpcPlatform(typeof(PgIpc.Platform.Windows.WindowsPlatform))]

namespace PgIpc.Platform.Windows;

/// <summary>Windows backend.</summary>
public sealed class WindowsPlatform : IPgIpcPlatform
{
    /// <inheritdoc/>
    public string Name => "windows";

    /// <inheritdoc/>
    public bool IsSupported => OperatingSystem.IsWindows();

    /// <inheritdoc/>
    public ISharedMemoryProvider SharedMemory { get; } = new WindowsSharedMemory();

    /// <inheritdoc/>
    public IProcessServices Processes { get; } = new WindowsProcessServices();

    /// <inheritdoc/>
    public IProcSemaphoreProvider Semaphores { get; } = new WindowsSemaphoreProvider();

    /// <inheritdoc/>
    public ILatchProvider Latches { get; } = new WindowsLatchProvider();

    /// <inheritdoc/>
    public IDsmProvider Dsm { get; } = new WindowsDsmProvider();

    /// <inheritdoc/>
    public IFileSync Files { get; } = new WindowsFileSync();
}
