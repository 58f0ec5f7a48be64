/*-------------------------------------------------------------------------
 * BufferWorkerCommands.cs
 *   The worker process's commands for the buffer pool tests.
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol):
 *     buf-attach <nbuffers> <datadir>            -> ok            (BufferPool.Init on the attached segment; joins)
 *     buf-read <rel> <block> <offset>            -> ok <value>    (reads the long at offset of the page)
 *     buf-write <rel> <block> <offset> <value>   -> ok            (stores it under the exclusive content lock,
 *                                                                  marks the buffer dirty and flushes it)
 *     buf-incr <rel> <pages> <iters> <seed>      -> ok            (iters random read-modify-writes: +1 to the
 *                                                                  long at offset 128 of a random page, under the
 *                                                                  exclusive content lock)
 *     buf-ckpt-start <timeoutMs> <shutdown 0|1>  -> ok <procno>   (a thread joins as an auxiliary participant and
 *                                                                  runs Checkpointer.Run; replies once registered)
 *     buf-ckpt-stop                              -> ok             (cancels it and joins; error if Run threw)
 *     buf-bgw-start <delayMs> <maxpages>         -> ok             (a thread runs BackgroundWriter.Run)
 *     buf-bgw-stop                               -> ok <written> <rounds>
 *     buf-ckpt-request <flag,flag,...>           -> ok             (RequestCheckpoint; flags by CheckpointFlags name)
 *     buf-ckpt-status                            -> ok <started> <done> <failed> <buffersWritten> <filesSynced>
 *     buf-leave                                  -> ok             (stops the daemons first)
 *   The data directory must not contain spaces (the command line is split on them).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Globalization;
using PgIpc.Buffers;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Buffers;

internal static class BufferWorkerCommands
{
    private static BufferCluster? s_cluster;
    private static Participant? s_me;
    private static Daemon? s_checkpointer;
    private static Daemon? s_bgwDaemon;
    private static BackgroundWriter? s_bgwriter;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "buf-attach":
                s_cluster = BufferCluster.Attach(seg ?? throw new InvalidOperationException("worker is not attached"),
                    new BufferPoolOptions(Int(a[1]), a[2]));
                s_me = s_cluster.Procs.Join();
                reply = "ok";
                return true;
            case "buf-read":
            {
                BufferPool pool = Pool;
                int b = pool.ReadBuffer(Me, (uint)Int(a[1]), ForkNumber.Main, Int(a[2]));
                pool.LockBuffer(Me, b, BufferLockMode.Shared);
                long v = BinaryPrimitives.ReadInt64LittleEndian(pool.GetPage(Me, b)[Int(a[3])..]);
                pool.LockBuffer(Me, b, BufferLockMode.Unlock);
                pool.ReleaseBuffer(Me, b);
                reply = $"ok {v}";
                return true;
            }
            case "buf-write":
            {
                BufferPool pool = Pool;
                int b = pool.ReadBuffer(Me, (uint)Int(a[1]), ForkNumber.Main, Int(a[2]));
                pool.LockBuffer(Me, b, BufferLockMode.Exclusive);
                BinaryPrimitives.WriteInt64LittleEndian(pool.GetPage(Me, b)[Int(a[3])..], long.Parse(a[4], CultureInfo.InvariantCulture));
                pool.MarkBufferDirty(Me, b);
                pool.FlushBuffer(Me, b);
                pool.LockBuffer(Me, b, BufferLockMode.Unlock);
                pool.ReleaseBuffer(Me, b);
                reply = "ok";
                return true;
            }
            case "buf-incr":
                BufferStress.Increment(Pool, Me, (uint)Int(a[1]), Int(a[2]), Int(a[3]), Int(a[4]));
                reply = "ok";
                return true;
            case "buf-ckpt-start":
            {
                BufferCluster c = Cluster;
                var options = BufferCluster.CheckpointerOptions with { TimeoutMs = Int(a[1]), ShutdownCheckpoint = a[2] == "1" };
                Checkpointer ckpt = Checkpointer.Init(c.Segment, c.Procs, c.Pool, options, out _);
                s_checkpointer = Daemon.Start("checkpointer", c, (me, stop) => ckpt.Run(me, stop));
                int pid = Environment.ProcessId;
                var sw = System.Diagnostics.Stopwatch.StartNew();
                while (ckpt.Status.Pid != pid || ckpt.Status.ProcNumber != s_checkpointer.ProcNumber)
                {
                    if (s_checkpointer.Error is { } e)
                        throw new InvalidOperationException($"the checkpointer did not start: {e.Message}", e);
                    if (sw.Elapsed > TimeSpan.FromSeconds(30))
                        throw new TimeoutException("the checkpointer did not register within 30 s");
                    Thread.Sleep(5);
                }
                reply = $"ok {s_checkpointer.ProcNumber}";
                return true;
            }
            case "buf-ckpt-stop":
                StopDaemon(ref s_checkpointer);
                reply = "ok";
                return true;
            case "buf-bgw-start":
            {
                var bgw = new BackgroundWriter(Pool, new BgWriterOptions(DelayMs: Int(a[1]), LruMaxPages: Int(a[2])));
                s_bgwriter = bgw;
                s_bgwDaemon = Daemon.Start("bgwriter", Cluster, bgw.Run);
                reply = "ok";
                return true;
            }
            case "buf-bgw-stop":
            {
                StopDaemon(ref s_bgwDaemon);
                BackgroundWriter bgw = s_bgwriter ?? throw new InvalidOperationException("buf-bgw-start first");
                s_bgwriter = null;
                reply = $"ok {bgw.BuffersWritten} {bgw.Rounds}";
                return true;
            }
            case "buf-ckpt-request":
            {
                CheckpointFlags flags = CheckpointFlags.None;
                foreach (string f in a[1].Split(','))
                    flags |= Enum.Parse<CheckpointFlags>(f, ignoreCase: true);
                Cluster.Checkpointer.RequestCheckpoint(Me, flags);
                reply = "ok";
                return true;
            }
            case "buf-ckpt-status":
            {
                CheckpointerStatus st = Cluster.Checkpointer.Status;
                reply = $"ok {st.Started} {st.Done} {st.Failed} {st.BuffersWritten} {st.FilesSynced}";
                return true;
            }
            case "buf-leave":
                StopDaemon(ref s_checkpointer);
                StopDaemon(ref s_bgwDaemon);
                s_me?.Dispose();
                s_me = null;
                s_cluster?.Pool.Dispose();
                s_cluster = null;
                reply = "ok";
                return true;
            default:
                return false;
        }
    }

    private static BufferCluster Cluster => s_cluster ?? throw new InvalidOperationException("buf-attach first");

    private static BufferPool Pool => Cluster.Pool;

    private static void StopDaemon(ref Daemon? d)
    {
        Daemon? daemon = d;
        d = null;
        daemon?.Stop();
    }

    private static Participant Me => s_me ?? throw new InvalidOperationException("buf-attach first");

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);
}

/// <summary>An auxiliary participant's main loop on its own thread, stopped by cancellation (bounded join).</summary>
internal sealed class Daemon
{
    private readonly Thread _thread;
    private readonly CancellationTokenSource _stop = new();
    private readonly ManualResetEventSlim _joined = new();
    private volatile Exception? _error;
    private int _procNumber = -1;

    private Daemon(string name, BufferCluster cluster, Action<Participant, CancellationToken> body)
    {
        _thread = new Thread(() =>
        {
            try
            {
                using Participant me = cluster.Procs.Join(ProcKind.Auxiliary);
                _procNumber = me.ProcNumber;
                _joined.Set();
                body(me, _stop.Token);
            }
            catch (Exception e)
            {
                _error = e;
            }
            finally
            {
                _joined.Set();
            }
        }) { IsBackground = true, Name = name };
    }

    public Exception? Error => _error;

    public int ProcNumber => _procNumber;

    public static Daemon Start(string name, BufferCluster cluster, Action<Participant, CancellationToken> body)
    {
        var d = new Daemon(name, cluster, body);
        d._thread.Start();
        if (!d._joined.Wait(TimeSpan.FromSeconds(30)))
            throw new TimeoutException($"the {name} thread did not join within 30 s");
        if (d._error is { } e)
            throw new InvalidOperationException($"the {name} thread failed: {e.Message}", e);
        return d;
    }

    /// <summary>Cancels and joins; rethrows what the loop threw.</summary>
    public void Stop()
    {
        _stop.Cancel();
        if (!_thread.Join(TimeSpan.FromSeconds(60)))
            throw new TimeoutException($"the {_thread.Name} thread did not stop within 60 s");
        _stop.Dispose();
        if (_error is { } e)
            throw new InvalidOperationException($"the {_thread.Name} thread failed: {e.Message}", e);
    }
}
