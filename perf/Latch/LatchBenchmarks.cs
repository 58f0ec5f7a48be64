/*-------------------------------------------------------------------------
 * LatchBenchmarks.cs
 *   Micro-benchmarks of latches: SetLatch on a latch that is already set,
 *   SetLatch + ResetLatch of one's own latch while nobody sleeps,
 *   CHECK_FOR_INTERRUPTS with nothing pending, and a same-process,
 *   cross-thread latch round trip.
 *
 * NOTES
 *   SetLatch's fast path is a full fence and a load of IsSet: on a set
 *   latch it returns there, with no system call (latch.c: "quick exit if
 *   already set"). On an unset latch it stores IsSet, fences again and
 *   looks at MaybeSleeping; when the owner is not inside WaitLatch that is
 *   0 and it returns, again with no system call. Only a sleeping owner
 *   costs a kernel wake-up (eventfd write on Linux, FIFO write on Posix).
 *   The three loop methods run LoopCount calls back to back per invocation
 *   (OperationsPerInvoke), so the figure is per call; MemoryDiagnoser must
 *   show 0 B.
 *
 *   CrossThreadRoundTrip: a helper thread, joined as a second participant
 *   in GlobalSetup, answers each Ping with Pong and SetLatch(benchmark
 *   participant), in the Reset / check / Wait loop PostgreSQL code uses;
 *   the benchmark thread does the same from its side, RoundTrips times per
 *   invocation. Both sleep in the kernel every round (the other side is
 *   never faster than the fence), so this is two wake-ups through the
 *   backend's kernel object inside one process: Linux writes the owner's
 *   eventfd directly (found in the process table, no pidfd duplicate),
 *   Posix writes the slot's FIFO. The cross-process figure is the pingpong
 *   harness's (Contention/PingPongHarness.cs).
 *
 *   The benchmark participant is joined in GlobalSetup and passed
 *   explicitly, which is allowed from any thread as long as no two threads
 *   use it at once (as in LWLockBenchmarks).
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Latch;
using PgIpc.Perf.Contention;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Perf.Latch;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public unsafe class LatchBenchmarks
{
    private const int LoopCount = 1024;
    private const int RoundTrips = 64;

    private PerfLatchCluster? _cluster;
    private ProcArray? _procs;
    private Participant? _me;
    private int _meProc;
    private Thread? _helper;
    private int _helperProc = -1;
    private PingPongControl* _ctl;
    private long _round;
    private Exception? _helperError;

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        _cluster = PerfLatchCluster.Create("latch", Backend);
        try
        {
            _procs = _cluster.Procs;
            _me = _procs.Join();
            _meProc = _me.ProcNumber;
            _ctl = (PingPongControl*)_cluster.Control;
            _helper = new Thread(HelperLoop) { Name = "latch bench helper", IsBackground = true };
            _helper.Start();
            // Acquire read; pairs with the helper's release store of Ready after ChildProc.
            while (Volatile.Read(ref _ctl->Ready) == 0)
                Thread.Sleep(1);
            if (_helperError is not null)
                throw new InvalidOperationException("the helper thread failed to join", _helperError);
            _helperProc = (int)_ctl->ChildProc;
            // SetLatchOnSetLatch's latch starts set (and stays so: nothing resets it in that method).
            Latches.SetLatch(_procs, _meProc);
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
        if (_helper is not null && _procs is not null)
        {
            // Release store, then a wake-up: the helper sees Stop after its ResetLatch.
            Volatile.Write(ref _ctl->Stop, 1);
            if (_helperProc >= 0)
                Latches.SetLatch(_procs, _helperProc);
            if (!_helper.Join(TimeSpan.FromSeconds(10)))
                throw new TimeoutException("the latch benchmark's helper thread did not stop");
        }
        _helper = null;
        _me?.Dispose();
        _me = null;
        _cluster?.Close();
        _cluster = null;
        _procs = null;
        _ctl = null;
        if (_helperError is not null)
            throw new InvalidOperationException("the helper thread failed", _helperError);
    }

    /// <summary>Latches.SetLatch(procs, procno) on a latch that is already set; figure per call. No system call.</summary>
    [Benchmark(OperationsPerInvoke = LoopCount)]
    public void SetLatchOnSetLatch()
    {
        ProcArray procs = _procs!;
        int procno = _meProc;
        for (int i = 0; i < LoopCount; i++)
            Latches.SetLatch(procs, procno);
    }

    /// <summary>Participant.SetLatch() on its own latch, already set; figure per call.</summary>
    [Benchmark(OperationsPerInvoke = LoopCount)]
    public void ParticipantSetLatchOnSetLatch()
    {
        Participant me = _me!;
        for (int i = 0; i < LoopCount; i++)
            me.SetLatch();
    }

    /// <summary>
    /// SetLatch on one's own unset latch (slow path: store, fence, MaybeSleeping is 0, return) + ResetLatch; figure
    /// per pair. No system call: nobody sleeps on the latch.
    /// </summary>
    [Benchmark(OperationsPerInvoke = LoopCount)]
    public void SetLatchThenResetOwn()
    {
        ProcArray procs = _procs!;
        Participant me = _me!;
        int procno = _meProc;
        for (int i = 0; i < LoopCount; i++)
        {
            Latches.SetLatch(procs, procno);
            Latches.ResetLatch(me);
        }
        // Leave it set, as SetLatchOnSetLatch expects, should BenchmarkDotNet run both in one process.
        Latches.SetLatch(procs, procno);
    }

    /// <summary>Participant.ProcessInterrupts() with no ProcSignal and no barrier pending (CHECK_FOR_INTERRUPTS); figure per call.</summary>
    [Benchmark(OperationsPerInvoke = LoopCount)]
    public long ProcessInterruptsNothingPending()
    {
        Participant me = _me!;
        long handled = 0;
        for (int i = 0; i < LoopCount; i++)
            handled |= me.ProcessInterrupts();
        return handled;
    }

    /// <summary>Same-process cross-thread latch round trip (both sides sleep in the kernel); figure per round trip.</summary>
    [Benchmark(OperationsPerInvoke = RoundTrips)]
    public void CrossThreadRoundTrip()
    {
        ProcArray procs = _procs!;
        Participant me = _me!;
        PingPongControl* ctl = _ctl;
        int helper = _helperProc;
        long round = _round;
        for (int i = 0; i < RoundTrips; i++)
        {
            round++;
            // Release store; pairs with the helper's acquire read of Ping after its ResetLatch.
            Volatile.Write(ref ctl->Ping, round);
            Latches.SetLatch(procs, helper);
            for (;;)
            {
                Latches.ResetLatch(me);
                // Acquire read; pairs with the helper's release store of Pong before SetLatch(me).
                if (Volatile.Read(ref ctl->Pong) == round)
                    break;
                Latches.WaitLatch(me, WaitEvents.LatchSet, -1);
            }
        }
        _round = round;
        // Leave the benchmark participant's latch set for SetLatchOnSetLatch, as in SetLatchThenResetOwn.
        Latches.SetLatch(procs, _meProc);
    }

    private void HelperLoop()
    {
        ProcArray procs = _procs!;
        PingPongControl* ctl = _ctl;
        Participant? me = null;
        try
        {
            me = procs.Join();
            ctl->ChildProc = me.ProcNumber;
            // Release store: ChildProc first; pairs with Setup's acquire read of Ready.
            Volatile.Write(ref ctl->Ready, 1);
            long answered = 0;
            for (;;)
            {
                Latches.ResetLatch(me);
                if (Volatile.Read(ref ctl->Stop) != 0)
                    break;
                // Acquire read; pairs with the benchmark thread's release store of Ping.
                long ping = Volatile.Read(ref ctl->Ping);
                if (ping != answered)
                {
                    answered = ping;
                    // Release store; pairs with the benchmark thread's acquire read of Pong after its ResetLatch.
                    Volatile.Write(ref ctl->Pong, ping);
                    Latches.SetLatch(procs, _meProc);
                    continue;
                }
                Latches.WaitLatch(me, WaitEvents.LatchSet, -1);
            }
        }
        catch (Exception e)
        {
            _helperError = e;
            Volatile.Write(ref ctl->Ready, 1);
        }
        finally
        {
            me?.Dispose();
        }
    }
}
