/*-------------------------------------------------------------------------
 * SinvalCluster.cs
 *   A segment with participant slots and the shared invalidation queue, as
 *   the sinval tests (and their worker processes) use it; plus the message
 *   numbering the tests check arrivals against.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sinval;

namespace PgIpc.Tests.Sinval;

internal sealed class SinvalCluster : IDisposable
{
    private readonly Supervisor? _supervisor;
    private readonly Cluster _cluster;

    public ShmemSegment Segment => _cluster.Segment;
    public ProcArray Procs => _cluster.Procs;
    public SinvalQueue Queue => _cluster.Sinval;

    private SinvalCluster(Supervisor? supervisor, Cluster cluster)
    {
        _supervisor = supervisor;
        _cluster = cluster;
    }

    public static SinvalCluster Create(IPgIpcPlatform platform, ProcArrayOptions? options = null)
    {
        options ??= new ProcArrayOptions(MaxBackends: 24, MaxAuxiliary: 2, MaxBackgroundWorkers: 2);
        Supervisor s = new ClusterBuilder(TestEnvironment.UniqueKey("si"))
            .WithPlatform(platform)
            .WithMaxParticipants(options)
            .WithLog(TextWriter.Null)
            .Build();
        return new SinvalCluster(s, s.Cluster);
    }

    /// <summary>The worker side: the structures another process made.</summary>
    public static SinvalCluster Attach(ShmemSegment seg) => new(null, Cluster.AttachTo(seg));

    /// <summary>Message number <paramref name="seq"/> from sender <paramref name="sender"/>: every field derived from both.</summary>
    public static SharedInvalidationMessage Message(uint sender, uint seq)
        => new((int)(seq % 7) - 3, sender, seq, unchecked(seq * 2654435761u ^ sender));

    /// <summary>True when <paramref name="m"/> is exactly what <see cref="Message"/> makes for its sender and number.</summary>
    public static bool IsIntact(in SharedInvalidationMessage m) => m == Message(m.DatabaseId, m.ObjectId);

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
}
