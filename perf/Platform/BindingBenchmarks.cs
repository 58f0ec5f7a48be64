/*-------------------------------------------------------------------------
 * BindingBenchmarks.cs
 *   Micro-benchmarks of the backend calls that cross into libc on hot
 *   paths, through the backend's own interfaces: a semaphore post that
 *   makes a futex wake (LWLock wake-up), a latch wake that writes an
 *   eventfd (SetLatch of a sleeping owner), and a wait-set wait (WaitLatch),
 *   empty and after a wake.
 *
 * NOTES
 *   Written to compare P/Invoke bindings (our [LibraryImport]s against
 *   Tmds.LibC's [DllImport]s on Linux): each figure is one system call or
 *   a few, with nothing else around it that a binding change could move.
 *   No process sleeps: FUTEX_WAKE finds no waiter, the eventfd is
 *   non-blocking, the waits have a zero timeout. The posix rows run the
 *   Posix backend's own bindings (sem_post, FIFO write, poll) and serve as
 *   the control when two builds are compared: they should not move.
 *
 *   The job runs in process (InProcessEmitToolchain): the binary under test
 *   is the perf build itself, so two builds are compared by running each.
 *
 *   Storage is process-local native memory: semaphore words and latch
 *   slots work the same there as in a segment (shared futex ops on a
 *   private page are keyed by address). Everything is made in GlobalSetup
 *   and closed in GlobalCleanup; no segment, no file is left.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using PgIpc.Platform;

namespace PgIpc.Perf.Platform;

[MemoryDiagnoser]
[Config(typeof(InProcessShortConfig))]
public unsafe class BindingBenchmarks
{
    /// <summary>
    /// The short job, run in the benchmark process itself: no generated project to build (which took over
    /// BenchmarkDotNet's two-minute build timeout on the loaded machine when two builds were compared in turn).
    /// </summary>
    private sealed class InProcessShortConfig : ManualConfig
    {
        public InProcessShortConfig() =>
            AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(8)
                .WithToolchain(InProcessEmitToolchain.Instance));
    }

    private const int LoopCount = 256;
    private const int StorageBytes = 64;

    private void* _storage;
    private IProcSemaphoreSet? _sems;
    private ILatchWakers? _wakers;
    private ILatchOwner? _owner;
    private IPlatformWaitSet? _waitSet;
    private readonly WaitEvent[] _occurred = new WaitEvent[4];

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        IPgIpcPlatform p = PgIpcPlatform.Get(Backend);
        _storage = NativeMemory.AlignedAlloc(2 * StorageBytes, 64);
        NativeMemory.Clear(_storage, 2 * StorageBytes);
        string name = "bind" + Environment.ProcessId;
        try
        {
            _sems = p.Semaphores.Create(name, (nint)_storage, StorageBytes, 1);
            _sems.Unlock(0); // one unit: Lock takes it without sleeping
            _wakers = p.Latches.Create(name, (nint)_storage + StorageBytes, StorageBytes, 1);
            _owner = _wakers.Own(0);
            _waitSet = p.Latches.CreateWaitSet(2);
            _waitSet.AddLatch(_owner);
        }
        catch
        {
            Cleanup();
            throw;
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _waitSet?.Dispose();
        _waitSet = null;
        _owner?.Dispose();
        _owner = null;
        _wakers?.Destroy();
        _wakers = null;
        _sems?.Destroy();
        _sems = null;
        if (_storage != null)
            NativeMemory.AlignedFree(_storage);
        _storage = null;
    }

    /// <summary>Unlock (linux: increment + FUTEX_WAKE with no waiter) + Lock (takes the unit, no system call); figure per pair.</summary>
    [Benchmark(OperationsPerInvoke = LoopCount)]
    public void SemaphoreUnlockLock()
    {
        IProcSemaphoreSet s = _sems!;
        for (int i = 0; i < LoopCount; i++)
        {
            s.Unlock(0);
            s.Lock(0);
        }
    }

    /// <summary>Wake of a latch owned by this process (linux: table look-up + write(2) of 1 to its eventfd); figure per call.</summary>
    [Benchmark(OperationsPerInvoke = LoopCount)]
    public void LatchWake()
    {
        ILatchWakers w = _wakers!;
        for (int i = 0; i < LoopCount; i++)
            w.Wake(0);
    }

    /// <summary>Wait with a zero timeout on a set holding one latch, after draining it (linux: epoll_wait returning 0); figure per call.</summary>
    [Benchmark(OperationsPerInvoke = LoopCount)]
    public int WaitEmpty()
    {
        IPlatformWaitSet ws = _waitSet!;
        _owner!.Drain();
        int n = 0;
        for (int i = 0; i < LoopCount; i++)
            n += ws.Wait(0, _occurred);
        return n;
    }

    /// <summary>Wake, then a zero-timeout wait that reports and drains it (linux: write + epoll_wait + read until EAGAIN); figure per pair.</summary>
    [Benchmark(OperationsPerInvoke = LoopCount)]
    public int WakeThenWait()
    {
        ILatchWakers w = _wakers!;
        IPlatformWaitSet ws = _waitSet!;
        int n = 0;
        for (int i = 0; i < LoopCount; i++)
        {
            w.Wake(0);
            n += ws.Wait(0, _occurred);
        }
        return n;
    }
}
