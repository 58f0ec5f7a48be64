/*-------------------------------------------------------------------------
 * ParallelContext.cs
 *   The leader's side of parallel work: a dynamic shared memory segment
 *   whose table of contents locates the shared state, N dynamic background
 *   workers started with the segment's handle, and per worker an error
 *   queue and a tuple queue (shm_mq) back to the leader.
 *
 * NOTES
 *   The life of a context follows parallel.c:
 *     CreateParallelContext    ParallelContext.Create(cluster, spec, n)
 *     shm_toc_estimate_*       ctx.Estimator.EstimateChunk / EstimateKeys
 *     InitializeParallelDSM    ctx.InitializeDsm(): estimate our own
 *                              pieces, dsm_create, shm_toc_create, the
 *                              fixed header and 2N queues (leader is the
 *                              receiver of every one)
 *     shm_toc_allocate/insert  ctx.Toc.Allocate / Insert (user state)
 *     LaunchParallelWorkers    ctx.LaunchParallelWorkers()
 *     WaitForParallelWorkersToAttach / ToFinish, DestroyParallelContext
 *                              (Dispose).
 *
 *   Handing the segment to a worker. The supervisor starts a dynamic worker
 *   from the ChildSpec stored in its slot, and a spec carries no
 *   environment, so the segment's handle and the worker number travel as a
 *   last argument "--pgipc-parallel=<dsm handle>:<worker number>"
 *   (PostgreSQL puts them in bgw_main_arg and bgw_extra). ParallelWorker
 *   parses it.
 *
 *   Fewer workers than asked. As parallel.c does, LaunchParallelWorkers
 *   registers workers in order until the supervisor has no free slot, and
 *   the context runs with the ones it got (NumLaunched, nworkers_launched);
 *   with none, the leader does the work itself. The workers' numbers are
 *   0..NumLaunched-1 and each worker sees NumLaunched as its NumWorkers:
 *   the leader publishes the count in the fixed state once the loop ends
 *   (-1 until then), and ParallelWorker.Attach waits for it, so a worker
 *   that splits the work by its number never leaves a share unsent. A
 *   context for zero workers, or one whose segment could not be created
 *   (no free DSM slot, no room: DsmCreateFlags.NoFail), lives in private
 *   memory instead (InitializeParallelDSM's private_memory): the same toc
 *   API, no OS object, and no workers.
 *
 *   Errors. PostgreSQL's worker sends its ErrorResponse on the error queue
 *   and the leader rethrows it (HandleParallelMessages). Here a worker that
 *   throws sends 'E' + the message (UTF-8) on its error queue; a worker
 *   that completes sends 'X'. Either way it then exits with code 0: the
 *   supervisor treats a non-zero exit as a crash and, like the postmaster,
 *   stops every child and rebuilds (or, with restart-after-crash off,
 *   destroys) shared memory - far too big a hammer for one failed task.
 *   The leader turns 'E' into ParallelWorkerException with the worker's
 *   message. An error queue that ends (peer gone) without 'E' or 'X' means
 *   the worker died without reporting (killed): that too is a
 *   ParallelWorkerException, never a hang, because every leader handle is
 *   attached with the worker's BackgroundWorkerHandle as its IShmMqPeer
 *   (a worker that never starts or has stopped reads as dead) and the
 *   queue also checks the pid the worker recorded when it attached.
 *
 *   A worker killed by a signal exits non-zero, so the supervisor does its
 *   crash handling: it asks every child to stop (setting every latch,
 *   including the leader's), waits up to the stop grace for them, and then
 *   destroys shared memory. A leader in the supervisor's own process must
 *   therefore notice the death and dispose its context before that; the
 *   wake-up from the crash handling makes it notice at once (see the kill
 *   test, which keeps the window open with a slow-exiting child).
 *
 *   Dispose: detach every queue (workers see Detached and stop), wait up to
 *   10 s for each worker to stop, detach the segment (whichever of leader
 *   and workers detaches last removes it; a killed worker's reference is
 *   dropped when the cluster's shared memory is destroyed), and only then
 *   throw if a worker did not stop in time (the supervisor's shutdown
 *   kills it).
 *
 *   Mirrors src/backend/access/transam/parallel.c.
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

/// <summary>The leader's parallel context (ParallelContext in parallel.c).</summary>
public sealed unsafe class ParallelContext : IDisposable
{
    /// <summary>Magic of the toc (PARALLEL_MAGIC).</summary>
    internal const ulong ParallelMagic = 0x50477c7c;

    /// <summary>Keys at or above this are the context's own; user keys must be below.</summary>
    public const ulong FirstReservedKey = 0xFFFFFFFFFFFF0000;
    internal const ulong KeyFixed = 0xFFFFFFFFFFFF0001;
    internal const ulong KeyErrorQueues = 0xFFFFFFFFFFFF0002;
    internal const ulong KeyTupleQueues = 0xFFFFFFFFFFFF0003;

    /// <summary>Default bytes of each queue (PARALLEL_ERROR_QUEUE_SIZE / PARALLEL_TUPLE_QUEUE_SIZE are 16 and 64 KiB).</summary>
    public const long DefaultQueueSize = 64 * 1024;

    /// <summary>The argument that hands a worker its segment and number.</summary>
    internal const string WorkerArgumentPrefix = "--pgipc-parallel=";

    /// <summary>
    /// The fixed state under <see cref="KeyFixed"/> (FixedParallelState): <see cref="FixedWords"/> 64-bit words,
    /// written by the leader before the workers are launched and immutable afterwards (so no lock and no
    /// barrier beyond the registration's spinlock, which orders them before any worker starts).
    /// </summary>
    internal const int FixedNumWorkers = 0, FixedLeaderPid = 1, FixedLeaderProcNumber = 2, FixedQueueSize = 3, FixedWords = 8;

    /// <summary>
    /// Word of the fixed state holding the number of workers launched: -1 until LaunchParallelWorkers has registered
    /// every worker it could, then the count. Written once by the leader (release, Volatile.Write) after the
    /// registrations; read by each worker (acquire, Volatile.Read) in ParallelWorker.Attach, which waits for it.
    /// </summary>
    internal const int FixedNumLaunched = 4;

    internal const byte MsgError = (byte)'E';
    internal const byte MsgDone = (byte)'X';

    private static readonly TimeSpan StopWait = TimeSpan.FromSeconds(10);

    private readonly Cluster _cluster;
    private readonly Participant _leader;
    private readonly ChildSpec _workerSpec;
    private readonly long _queueSize;
    private ShmTocEstimator _estimator = ShmTocEstimator.InitializeEstimator();
    private DsmSegment? _segment;
    private byte* _privateMemory;
    private ShmToc? _toc;
    private ShmMqHandle?[] _errorQueues = [];
    private ShmMqHandle?[] _tupleQueues = [];
    private BackgroundWorkerHandle?[] _workers = [];
    private bool[] _finished = [];
    private string?[] _errors = [];
    private bool _launched;
    private bool _disposed;

    private ParallelContext(Cluster cluster, Participant leader, ChildSpec workerSpec, int nworkers, long queueSize)
    {
        _cluster = cluster;
        _leader = leader;
        _workerSpec = workerSpec;
        NumWorkers = nworkers;
        _queueSize = queueSize;
    }

    /// <summary>
    /// A context for <paramref name="nworkers"/> workers run as <paramref name="workerSpec"/> (CreateParallelContext).
    /// The calling thread must have joined the cluster (<see cref="Participant.Current"/>): it is the leader.
    /// Each worker's process must call <see cref="ParallelWorker.Attach()"/>. Convenience for
    /// <see cref="Create(Cluster, Participant, ChildSpec, int, long)"/> with the calling thread's participant.
    /// </summary>
    public static ParallelContext Create(Cluster cluster, ChildSpec workerSpec, int nworkers, long queueSize = DefaultQueueSize)
        => Create(cluster, Participant.Current, workerSpec, nworkers, queueSize);

    /// <summary>
    /// A context for <paramref name="nworkers"/> workers run as <paramref name="workerSpec"/> (CreateParallelContext),
    /// led by <paramref name="leader"/> (a participant of <paramref name="cluster"/>, used by one thread at a time).
    /// Each worker's process must call <see cref="ParallelWorker.Attach()"/>.
    /// </summary>
    public static ParallelContext Create(Cluster cluster, Participant leader, ChildSpec workerSpec, int nworkers, long queueSize = DefaultQueueSize)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentNullException.ThrowIfNull(leader);
        ArgumentNullException.ThrowIfNull(workerSpec);
        ArgumentOutOfRangeException.ThrowIfNegative(nworkers);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueSize, ShmMq.HeaderSize + ShmMq.MinRingSize);
        return new ParallelContext(cluster, leader, workerSpec, nworkers, queueSize);
    }

    /// <summary>
    /// Number of workers the context asks for (nworkers). Zero after <see cref="InitializeDsm"/> when the context
    /// had to fall back to private memory (no DSM segment could be created), as parallel.c does.
    /// </summary>
    public int NumWorkers { get; private set; }

    /// <summary>
    /// Number of workers <see cref="LaunchParallelWorkers"/> registered (nworkers_launched): at most
    /// <see cref="NumWorkers"/>, fewer when the supervisor had fewer free background-worker slots, 0 before the launch.
    /// With none, the leader does the work itself.
    /// </summary>
    public int NumLaunched { get; private set; }

    /// <summary>
    /// True when the shared state lives in the leader's private memory rather than a DSM segment (zero workers, or
    /// the segment could not be created): the toc works as usual, <see cref="Segment"/> throws, no worker is launched.
    /// </summary>
    public bool IsInPrivateMemory => _privateMemory is not null;

    /// <summary>The leader's participant.</summary>
    public Participant Leader => _leader;

    /// <summary>Where the user reserves its chunks and keys before <see cref="InitializeDsm"/> (pcxt->estimator).</summary>
    public ref ShmTocEstimator Estimator => ref _estimator;

    /// <summary>The segment (after <see cref="InitializeDsm"/>).</summary>
    public DsmSegment Segment => _segment ?? throw new InvalidOperationException(
        IsInPrivateMemory ? "the context runs in private memory (no workers): it has no segment" : "InitializeDsm has not run");

    /// <summary>The toc, where the user allocates and inserts its shared state (after <see cref="InitializeDsm"/>).</summary>
    public ShmToc Toc => _toc ?? throw new InvalidOperationException("InitializeDsm has not run");

    /// <summary>The workers' handles (null for one not launched).</summary>
    public IReadOnlyList<BackgroundWorkerHandle?> Workers => _workers;

    /// <summary>The leader's receiving handle on worker <paramref name="worker"/>'s tuple queue.</summary>
    public ShmMqHandle TupleQueue(int worker)
        => _tupleQueues[worker] ?? throw new InvalidOperationException($"tuple queue of worker {worker} is detached or not launched");

    /// <summary>
    /// Creates the segment, the toc, the fixed state and the queues (InitializeParallelDSM). With no workers asked
    /// for, or when no segment can be created, the toc lives in private memory and the context will launch no
    /// worker (<see cref="IsInPrivateMemory"/>).
    /// </summary>
    public void InitializeDsm()
    {
        ThrowIfDisposed();
        if (_toc is not null)
            throw new InvalidOperationException("InitializeDsm has already run");
        DsmSegment? seg = NumWorkers > 0 ? DsmSegment.Create(_cluster.Dsm, EstimateFor(NumWorkers), DsmCreateFlags.NoFail) : null;
        byte* memory;
        long size;
        if (seg is not null)
        {
            memory = seg.Pointer;
            size = seg.Size;
        }
        else
        {
            NumWorkers = 0;
            size = EstimateFor(0);
            memory = (byte*)NativeMemory.AlignedAlloc((nuint)size, 64);
            NativeMemory.Clear(memory, (nuint)size);
            _privateMemory = memory;
        }
        try
        {
            ShmToc toc = ShmToc.Create(ParallelMagic, memory, size);
            ShmTocChunk fixedChunk = toc.Allocate(FixedWords * sizeof(long));
            Span<long> fps = MemoryMarshal.Cast<byte, long>(fixedChunk.AsSpan());
            fps[FixedNumWorkers] = NumWorkers;
            fps[FixedLeaderPid] = _cluster.Platform.Processes.CurrentProcessId;
            fps[FixedLeaderProcNumber] = _leader.ProcNumber;
            fps[FixedQueueSize] = _queueSize;
            fps[FixedNumLaunched] = -1;
            toc.Insert(KeyFixed, fixedChunk);
            _errorQueues = CreateQueues(toc, KeyErrorQueues);
            _tupleQueues = CreateQueues(toc, KeyTupleQueues);
            _segment = seg;
            _toc = toc;
            _workers = new BackgroundWorkerHandle?[NumWorkers];
            _finished = new bool[NumWorkers];
            _errors = new string?[NumWorkers];
        }
        catch
        {
            seg?.Detach();
            FreePrivateMemory();
            throw;
        }
    }

    /// <summary>Bytes of the segment for <paramref name="nworkers"/> workers: the user's estimate plus our pieces.</summary>
    private long EstimateFor(int nworkers)
    {
        ShmTocEstimator e = _estimator;
        e.EstimateChunk(FixedWords * sizeof(long));
        if (nworkers > 0)
        {
            e.EstimateChunk(Shmem.ShmemSize.Mul(nworkers, _queueSize));
            e.EstimateChunk(Shmem.ShmemSize.Mul(nworkers, _queueSize));
        }
        e.EstimateKeys(3);
        return e.Estimate();
    }

    private void FreePrivateMemory()
    {
        if (_privateMemory is null)
            return;
        NativeMemory.AlignedFree(_privateMemory);
        _privateMemory = null;
    }

    private ShmMqHandle?[] CreateQueues(ShmToc toc, ulong key)
    {
        if (NumWorkers == 0)
            return [];
        ShmTocChunk all = toc.Allocate(_queueSize * NumWorkers);
        toc.Insert(key, all);
        var handles = new ShmMqHandle?[NumWorkers];
        for (int i = 0; i < NumWorkers; i++)
        {
            ShmMq mq = ShmMq.Create(toc.ChunkAt(all.Offset + i * _queueSize, _queueSize));
            mq.SetReceiver(_leader);
            // The peer is set at launch; until then nobody sends, so the handle is made then.
            handles[i] = null;
        }
        return handles;
    }

    /// <summary>
    /// Registers the workers (LaunchParallelWorkers), in order, until the supervisor has no free background-worker
    /// slot; returns how many were registered (<see cref="NumLaunched"/>), which may be fewer than
    /// <see cref="NumWorkers"/>, or 0: then the leader does the work itself. Each worker gets the segment's handle and
    /// its number (0..NumLaunched-1) as its last argument, and sees NumLaunched as its NumWorkers.
    /// </summary>
    public int LaunchParallelWorkers()
    {
        ThrowIfDisposed();
        ShmToc toc = Toc;
        if (_launched)
            throw new InvalidOperationException("the workers were already launched");
        _launched = true;
        Span<long> fps = MemoryMarshal.Cast<byte, long>(toc.LookupChunk(KeyFixed, FixedWords * sizeof(long)).AsSpan());
        int launched = 0;
        try
        {
            if (NumWorkers == 0)
                return 0;
            DsmSegment seg = Segment;
            ShmTocChunk errors = toc.LookupChunk(KeyErrorQueues, _queueSize * NumWorkers);
            ShmTocChunk tuples = toc.LookupChunk(KeyTupleQueues, _queueSize * NumWorkers);
            for (int i = 0; i < NumWorkers; i++)
            {
                string arg = string.Create(CultureInfo.InvariantCulture, $"{WorkerArgumentPrefix}{seg.Handle}:{i}");
                ChildSpec spec = _workerSpec with { Arguments = [.. _workerSpec.Arguments, arg], RestartIntervalMs = ChildSpec.NeverRestart };
                BackgroundWorkerHandle h;
                try
                {
                    h = _cluster.RegisterDynamicBackgroundWorker(spec);
                }
                catch (NoFreeBackgroundWorkerSlotException)
                {
                    break; // run with the workers we got (parallel.c: nworkers_launched < nworkers_to_launch)
                }
                _workers[i] = h;
                launched = i + 1;
                var peer = new BackgroundWorkerPeer(h);
                _errorQueues[i] = ShmMq.Open(toc.ChunkAt(errors.Offset + i * _queueSize, _queueSize)).AttachAsReceiver(_leader, peer);
                _tupleQueues[i] = ShmMq.Open(toc.ChunkAt(tuples.Offset + i * _queueSize, _queueSize)).AttachAsReceiver(_leader, peer);
            }
            return launched;
        }
        finally
        {
            // Also when a registration threw something else: the workers already registered must not wait forever.
            NumLaunched = launched;
            Volatile.Write(ref fps[FixedNumLaunched], launched); // pairs with the acquire read in ParallelWorker.Attach
        }
    }

    /// <summary>
    /// Waits until every worker has attached to its queues (WaitForParallelWorkersToAttach). A worker that stops
    /// first, or does not attach within <paramref name="timeout"/>, is an error.
    /// </summary>
    public void WaitForParallelWorkersToAttach(TimeSpan timeout)
    {
        ThrowIfDisposed();
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        for (int i = 0; i < NumLaunched; i++)
        {
            BackgroundWorkerHandle h = _workers[i] ?? throw new InvalidOperationException("LaunchParallelWorkers has not run");
            if (_errorQueues[i] is not { } errorHandle)
                continue; // already read to its end (the worker finished or failed)
            ShmMq errorQueue = errorHandle.Queue;
            while (errorQueue.SenderProcNumber == PgProc.InvalidProcNumber)
            {
                if (h.GetStatus() == BgwHandleStatus.Stopped && errorQueue.SenderProcNumber == PgProc.InvalidProcNumber)
                {
                    ReadErrorQueue(i);
                    throw new ParallelWorkerException(i, _errors[i] ?? "it stopped before attaching to its queues", _errors[i] is not null);
                }
                if (Environment.TickCount64 > deadline)
                    throw new TimeoutException($"parallel worker {i} did not attach to its queues within {timeout.TotalMilliseconds} ms ({h.GetStatus()})");
                Thread.Sleep(2);
            }
        }
    }

    /// <summary>
    /// Reads each worker's error queue to its end and waits for the workers to stop (WaitForParallelWorkersToFinish).
    /// Throws <see cref="ParallelWorkerException"/> for the first worker that reported an error or died without
    /// reporting; <see cref="TimeoutException"/> when a worker does not stop within <paramref name="timeout"/> of
    /// reporting.
    /// </summary>
    public void WaitForParallelWorkersToFinish(TimeSpan timeout)
    {
        ThrowIfDisposed();
        for (int i = 0; i < NumLaunched; i++)
            ReadErrorQueue(i);
        for (int i = 0; i < NumLaunched; i++)
            _workers[i]?.WaitForShutdown(timeout);
        ThrowIfWorkerFailed();
    }

    /// <summary>
    /// Receives the next message worker <paramref name="worker"/> sent on its tuple queue. Returns false at the end of
    /// the stream (the worker detached and reported success); throws <see cref="ParallelWorkerException"/> when it
    /// reported an error or died without reporting. The span stays valid until the next receive on that queue.
    /// </summary>
    public bool ReceiveTuple(int worker, out ReadOnlySpan<byte> message)
    {
        ThrowIfDisposed();
        ShmMqResult r = TupleQueue(worker).Receive(out message);
        if (r == ShmMqResult.Success)
            return true;
        ReadErrorQueue(worker);
        if (_errors[worker] is { } err)
            throw new ParallelWorkerException(worker, err, _finished[worker]);
        return false;
    }

    /// <summary>Throws for the first worker whose error queue carried an error or ended without a report.</summary>
    private void ThrowIfWorkerFailed()
    {
        for (int i = 0; i < NumLaunched; i++)
            if (_errors[i] is { } err)
                throw new ParallelWorkerException(i, err, _finished[i]);
    }

    /// <summary>Reads worker <paramref name="i"/>'s error queue until its end (HandleParallelMessages).</summary>
    private void ReadErrorQueue(int i)
    {
        ShmMqHandle? q = _errorQueues[i];
        if (q is null)
            return;
        while (true)
        {
            ShmMqResult r = q.Receive(out ReadOnlySpan<byte> msg);
            if (r != ShmMqResult.Success)
                break;
            if (msg.Length >= 1 && msg[0] == MsgError)
            {
                _errors[i] ??= Encoding.UTF8.GetString(msg[1..]);
                _finished[i] = true;
            }
            else if (msg.Length >= 1 && msg[0] == MsgDone)
                _finished[i] = true;
        }
        if (!_finished[i])
        {
            // A worker that never became the queue's sender failed to start or to initialize (parallel.c: "parallel
            // worker failed to initialize"); one that did and then went quiet was killed.
            _errors[i] ??= q.Queue.SenderProcNumber == PgProc.InvalidProcNumber
                ? $"it stopped before attaching to its queues: it failed to start or to initialize (see the supervisor's log; {_workers[i]?.ToString() ?? "not launched"})"
                : $"its error queue ended without an error or completion message (killed: {_workers[i]?.ToString() ?? "not launched"})";
        }
        q.Detach();
        _errorQueues[i] = null;
    }

    /// <summary>Detaches every queue, waits for (or gives up on) the workers, detaches the segment (DestroyParallelContext).</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        List<Exception>? errors = null;
        foreach (ShmMqHandle?[] set in new[] { _tupleQueues, _errorQueues })
            for (int i = 0; i < set.Length; i++)
            {
                set[i]?.Detach();
                set[i] = null;
            }
        foreach (BackgroundWorkerHandle? h in _workers)
        {
            try
            {
                h?.WaitForShutdown(StopWait);
            }
            catch (TimeoutException ex)
            {
                (errors ??= []).Add(ex);
            }
        }
        _segment?.Detach();
        _segment = null;
        _toc = null;
        FreePrivateMemory();
        if (errors is not null)
            throw new AggregateException("parallel workers did not stop after the context was destroyed", errors);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>A worker's liveness for its queues: dead once its background worker slot reads Stopped.</summary>
    private sealed class BackgroundWorkerPeer(BackgroundWorkerHandle handle) : IShmMqPeer
    {
        public bool IsAlive => handle.GetStatus() != BgwHandleStatus.Stopped;
    }
}
