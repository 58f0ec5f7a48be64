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
    public string Name => "windows";

    public bool IsSupported => OperatingSystem.IsWindows();

    public ISharedMemoryProvider SharedMemory { get; } = new WindowsSharedMemory();

    public IProcessServices Processes { get; } = new WindowsProcessServices();

    public IProcSemaphoreProvider Semaphores { get; } = new WindowsSemaphoreProvider();

    public ILatchProvider Latches { get; } = new WindowsLatchProvider();

    public IDsmProvider Dsm { get; } = new WindowsDsmProvider();

    public IFileSync Files { get; } = new WindowsFileSync();
}
