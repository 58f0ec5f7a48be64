/*-------------------------------------------------------------------------
 * ParallelWorker.cs
 *   The worker's side of a parallel context, in a process the supervisor
 *   started for ParallelContext.LaunchParallelWorkers: attach to the
 *   cluster, join, attach the segment by handle, find the toc, become the
 *   sender of this worker's error and tuple queues.
 *
 * NOTES
 *   ParallelWorkerMain in parallel.c does the same after the fork: it
 *   attaches the segment named by bgw_main_arg, finds FixedParallelState,
 *   attaches its error queue (shm_mq_set_sender, pq_redirect_to_shm_mq) and
 *   only then runs the user's entry point; an error raised there travels to
 *   the leader as an ErrorResponse on the error queue.
 *
 *   Here Run(body) is the entry point: it attaches, runs the body, sends 'E'
 *   and the exception's message when the body throws, or 'X' when it
 *   returns, and detaches. It returns 0 in both cases: the error reaches the
 *   leader through the queue, and a non-zero exit would make the supervisor
 *   treat the worker as crashed (see ParallelContext.cs).
 *
 *   Mirrors ParallelWorkerMain in src/backend/access/transam/parallel.c.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using PgIpc.Dsm;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;

namespace PgIpc.Parallel;

/// <summary>A parallel worker's view of its context (in the worker's process).</summary>
public sealed unsafe class ParallelWorker : IDisposable
{
    private readonly Cluster _cluster;
    private readonly Participant _me;
    private readonly DsmSegment _segment;
    private ShmMqHandle? _errorQueue;
    private ShmMqHandle? _tupleQueue;
    private bool _reported;
    private bool _disposed;

    private ParallelWorker(Cluster cluster, Participant me, DsmSegment segment, ShmToc toc, int workerNumber, int numWorkers, ShmMqHandle errorQueue, ShmMqHandle tupleQueue)
    {
        _cluster = cluster;
        _me = me;
        _segment = segment;
        Toc = toc;
        WorkerNumber = workerNumber;
        NumWorkers = numWorkers;
        _errorQueue = errorQueue;
        _tupleQueue = tupleQueue;
    }

    /// <summary>This worker's number, 0..NumWorkers-1 (ParallelWorkerNumber).</summary>
    public int WorkerNumber { get; }

    /// <summary>The number of workers the leader launched.</summary>
    public int NumWorkers { get; }

    /// <summary>The cluster this worker is attached to.</summary>
    public Cluster Cluster => _cluster;

    /// <summary>This process's participant (joined by Attach on the calling thread).</summary>
    public Participant Participant => _me;

    /// <summary>The parallel context's dynamic shared memory segment.</summary>
    public DsmSegment Segment => _segment;

    /// <summary>The context's toc: the user's shared state by key.</summary>
    public ShmToc Toc { get; }

    /// <summary>The sending handle on this worker's tuple queue to the leader.</summary>
    public ShmMqHandle TupleQueue => _tupleQueue ?? throw new ObjectDisposedException(nameof(ParallelWorker));

    /// <summary>True when <paramref name="args"/> carry the argument a ParallelContext gives its workers.</summary>
    public static bool IsParallelWorker(IEnumerable<string> args)
        => args.Any(a => a.StartsWith(ParallelContext.WorkerArgumentPrefix, StringComparison.Ordinal));

    /// <summary>Attaches using this process's command line (see <see cref="Attach(IReadOnlyList{string})"/>).</summary>
    public static ParallelWorker Attach() => Attach(Environment.GetCommandLineArgs());

    /// <summary>
    /// Attaches to the cluster (from the supervisor's environment), joins the calling thread, attaches the segment
    /// named by the "--pgipc-parallel=handle:number" argument in <paramref name="args"/>, and becomes the sender of
    /// this worker's queues.
    /// </summary>
    public static ParallelWorker Attach(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        (uint handle, int number) = ParseArgument(args);
        Cluster cluster = Cluster.Attach();
        Participant? me = null;
        DsmSegment? seg = null;
        try
        {
            me = cluster.JoinAsChild();
            seg = DsmSegment.Attach(cluster.Dsm, handle);
            ShmToc toc = ShmToc.Attach(ParallelContext.ParallelMagic, seg.Pointer, seg.Size);
            Span<long> fps = MemoryMarshal.Cast<byte, long>(toc.LookupChunk(ParallelContext.KeyFixed, ParallelContext.FixedWords * sizeof(long)).AsSpan());
            long qsize = fps[ParallelContext.FixedQueueSize];
            int leaderPid = (int)fps[ParallelContext.FixedLeaderPid];
            var leader = new ShmMqProcessPeer(cluster.Platform.Processes, leaderPid);
            int n = WaitForLaunchCount(fps, leader);
            if ((uint)number >= (uint)n)
                throw new PgIpcException($"parallel worker number {number} is out of range: the leader launched {n} workers");
            ShmMq errors = ShmMq.Open(toc.ChunkAt(toc.Lookup(ParallelContext.KeyErrorQueues) + number * qsize, qsize));
            ShmMq tuples = ShmMq.Open(toc.ChunkAt(toc.Lookup(ParallelContext.KeyTupleQueues) + number * qsize, qsize));
            // The tuple queue first: the leader takes the error queue's sender as "attached".
            tuples.SetSender(me);
            errors.SetSender(me);
            return new ParallelWorker(cluster, me, seg, toc, number, n, errors.AttachAsSender(me, leader), tuples.AttachAsSender(me, leader));
        }
        catch
        {
            seg?.Detach();
            me?.Dispose();
            cluster.Dispose();
            throw;
        }
    }

    /// <summary>Most time a worker waits for its leader to finish registering the context's workers.</summary>
    private static readonly TimeSpan LaunchWait = TimeSpan.FromSeconds(60);

    /// <summary>
    /// The number of workers the leader launched, once it has published it (the leader registers its workers one
    /// after another and a worker may start before the last registration). A leader that dies first, or takes longer
    /// than <see cref="LaunchWait"/>, is an error, never a hang.
    /// </summary>
    private static int WaitForLaunchCount(Span<long> fps, ShmMqProcessPeer leader)
    {
        long deadline = Environment.TickCount64 + (long)LaunchWait.TotalMilliseconds;
        while (true)
        {
            // Pairs with the leader's release write at the end of ParallelContext.LaunchParallelWorkers.
            long n = Volatile.Read(ref fps[ParallelContext.FixedNumLaunched]);
            if (n >= 0)
                return (int)n;
            if (!leader.IsAlive)
                throw new PgIpcException($"the parallel leader (pid {fps[ParallelContext.FixedLeaderPid]}) died before it had launched its workers");
            if (Environment.TickCount64 > deadline)
                throw new PgIpcException($"the parallel leader (pid {fps[ParallelContext.FixedLeaderPid]}) did not finish launching its workers within {LaunchWait.TotalSeconds} s");
            Thread.Sleep(1);
        }
    }

    private static (uint Handle, int Number) ParseArgument(IReadOnlyList<string> args)
    {
        string? arg = args.LastOrDefault(a => a.StartsWith(ParallelContext.WorkerArgumentPrefix, StringComparison.Ordinal));
        if (arg is null)
            throw new PgIpcException($"no {ParallelContext.WorkerArgumentPrefix}<handle>:<number> argument: this process was not started by a ParallelContext");
        string[] parts = arg[ParallelContext.WorkerArgumentPrefix.Length..].Split(':');
        if (parts.Length != 2
            || !uint.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out uint handle)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int number))
            throw new PgIpcException($"malformed parallel worker argument \"{arg}\"");
        return (handle, number);
    }

    /// <summary>
    /// The whole life of a worker: attach, run <paramref name="body"/>, report its error or its completion to the
    /// leader, detach. Returns the process exit code: 0, also after an error (reported through the error queue).
    /// An error before the queues exist (a bad argument, a missing segment) is written to stderr and returns 1.
    /// </summary>
    public static int Run(IReadOnlyList<string> args, Action<ParallelWorker> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        ParallelWorker w;
        try
        {
            w = Attach(args);
        }
        catch (Exception ex)
        {
            Console.Error.WriteLine($"parallel worker could not attach: {ex.Message}");
            return 1;
        }
        using (w)
        {
            try
            {
                body(w);
            }
            catch (Exception ex)
            {
                w.ReportError(ex.Message);
            }
        }
        return 0;
    }

    /// <summary>Sends an error to the leader (it rethrows it as <see cref="ParallelWorkerException"/>). Once.</summary>
    public void ReportError(string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (_reported || _errorQueue is null)
            return;
        _reported = true;
        byte[] text = Encoding.UTF8.GetBytes(message);
        _errorQueue.Send([ParallelContext.MsgError], text);
    }

    /// <summary>Detaches the tuple queue, reports completion (unless an error was reported), detaches the rest.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _tupleQueue?.Detach();
        _tupleQueue = null;
        if (!_reported && _errorQueue is not null)
        {
            _reported = true;
            _errorQueue.Send([ParallelContext.MsgDone]);
        }
        _errorQueue?.Detach();
        _errorQueue = null;
        _segment.Detach();
        _me.Dispose();
        _cluster.Dispose();
    }
}
