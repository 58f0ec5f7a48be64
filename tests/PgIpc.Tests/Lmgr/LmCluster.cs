/*-------------------------------------------------------------------------
 * LmCluster.cs
 *   A cluster for the lock manager tests (and its worker processes): the
 *   kernel modules, with the lock manager's settings the test asks for,
 *   and a participant that lives on its own thread (LmParticipant), so a
 *   test can drive several participants, each holding locks and waiting,
 *   from one test thread.
 *-------------------------------------------------------------------------
 */
using System.Collections.Concurrent;
using System.Globalization;
using PgIpc.Lmgr;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Lmgr;

internal sealed class LmCluster : IDisposable
{
    private readonly Supervisor? _supervisor;
    private readonly Cluster _cluster;

    public ShmemSegment Segment => _cluster.Segment;
    public ProcArray Procs => _cluster.Procs;
    public LockManager Locks => _cluster.Get<LockManager>();

    private LmCluster(Supervisor? supervisor, Cluster cluster)
    {
        _supervisor = supervisor;
        _cluster = cluster;
    }

    public static LmCluster Create(IPgIpcPlatform platform, LockManagerOptions? options = null, ProcArrayOptions? procs = null)
    {
        Supervisor s = new ClusterBuilder(TestEnvironment.UniqueKey("lm"))
            .WithPlatform(platform)
            .WithMaxParticipants(procs ?? new ProcArrayOptions(MaxBackends: 24, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithLockManager(options ?? new LockManagerOptions(DeadlockTimeoutMs: 100))
            .WithLog(TextWriter.Null)
            .Build();
        return new LmCluster(s, s.Cluster);
    }

    public static LmCluster Attach(ShmemSegment seg) => new(null, Cluster.AttachTo(seg));

    public void Dispose()
    {
        if (_supervisor is not null)
            _supervisor.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        else if (Segment.IsAttached)
        {
            _cluster.Dispose();
            Segment.Dispose();
        }
    }

    /// <summary>Parses "rel:db:rel", "page:db:rel:blk", "tuple:db:rel:blk:off", "obj:db:class:obj", "adv:key", "user:kind:f1:f2:f3:f4".</summary>
    public static LockTag Tag(string spec)
    {
        string[] p = spec.Split(':');
        uint U(int i) => uint.Parse(p[i], CultureInfo.InvariantCulture);
        return p[0] switch
        {
            "rel" => LockTag.Relation(U(1), U(2)),
            "page" => LockTag.Page(U(1), U(2), U(3)),
            "tuple" => LockTag.Tuple(U(1), U(2), U(3), (ushort)U(4)),
            "obj" => LockTag.Object(U(1), U(2), U(3)),
            "adv" => LockTag.Advisory(long.Parse(p[1], CultureInfo.InvariantCulture)),
            "user" => LockTag.User((ushort)U(1), U(2), U(3), U(4), U(5)),
            _ => throw new ArgumentException($"bad tag spec {spec}"),
        };
    }
}

/// <summary>
/// A participant on a thread of its own: operations are posted to it and run there in order. <see cref="Run"/> waits for
/// the result; <see cref="Start"/> returns a handle to wait on later (for an acquire that blocks).
/// </summary>
internal sealed class LmParticipant : IDisposable
{
    private readonly BlockingCollection<(Func<Participant, string> Op, TaskCompletionSource<string> Done)> _ops = new();
    private readonly Thread _thread;
    private Participant? _me;

    public int ProcNumber { get; private set; } = -1;

    public LmParticipant(ProcArray procs, string name = "lm participant")
    {
        var joined = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        _thread = new Thread(() =>
        {
            try
            {
                _me = procs.Join();
                ProcNumber = _me.ProcNumber;
                joined.SetResult("ok");
            }
            catch (Exception ex)
            {
                joined.SetException(ex);
                return;
            }
            foreach ((Func<Participant, string> op, TaskCompletionSource<string> done) in _ops.GetConsumingEnumerable())
            {
                try
                {
                    done.SetResult(op(_me));
                }
                catch (Exception ex)
                {
                    done.SetException(ex);
                }
            }
            try
            {
                if (!_me.IsDisposed)
                    _me.Dispose();
            }
            catch (Exception)
            {
            }
        }) { IsBackground = true, Name = name };
        _thread.Start();
        if (!joined.Task.Wait(TimeSpan.FromSeconds(30)))
            throw new TimeoutException("the participant thread did not join");
        joined.Task.GetAwaiter().GetResult();
    }

    public Task<string> Start(Func<Participant, string> op)
    {
        var done = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ops.Add((op, done));
        return done.Task;
    }

    public string Run(Func<Participant, string> op, int timeoutMs = 30_000)
    {
        Task<string> t = Start(op);
        if (!((IAsyncResult)t).AsyncWaitHandle.WaitOne(timeoutMs))
            throw new TimeoutException($"participant {ProcNumber}: operation did not finish within {timeoutMs} ms");
        return t.GetAwaiter().GetResult();
    }

    /// <summary>Ends the thread (the participant leaves, releasing its locks).</summary>
    public void Dispose()
    {
        _ops.CompleteAdding();
        _thread.Join(TimeSpan.FromSeconds(30));
    }
}
