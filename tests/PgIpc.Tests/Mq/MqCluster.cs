/*-------------------------------------------------------------------------
 * MqCluster.cs
 *   A segment with participant slots and one large region that the shm_toc
 *   and shm_mq tests (and their worker processes) carve up.
 *-------------------------------------------------------------------------
 */
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Postmaster;
using PgIpc.Shmem;

namespace PgIpc.Tests.Mq;

internal sealed class MqCluster : IDisposable
{
    public const string RegionName = "test.mq";
    public const long RegionSize = 2 * 1024 * 1024;
    public const ulong TocMagic = 0x4D51_5445_5354_0001; // "MQTEST" 1

    private readonly Supervisor? _supervisor;
    private readonly Cluster _cluster;

    public ShmemSegment Segment => _cluster.Segment;
    public ProcArray Procs => _cluster.Procs;

    private MqCluster(Supervisor? supervisor, Cluster cluster)
    {
        _supervisor = supervisor;
        _cluster = cluster;
    }

    /// <summary>The kernel and one 2 MiB region for the queues' toc.</summary>
    public static MqCluster Create(IPgIpcPlatform platform, string? key = null)
    {
        Supervisor s = new ClusterBuilder(key ?? TestEnvironment.UniqueKey("mq"))
            .WithPlatform(platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 16, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithLog(TextWriter.Null)
            .AddModule(ShmemModule.Struct(RegionName, RegionSize))
            .Build();
        return new MqCluster(s, s.Cluster);
    }

    /// <summary>The worker side: the structures another process made.</summary>
    public static MqCluster Attach(ShmemSegment seg) => new(null, Cluster.AttachTo(seg));

    public ShmemRegion Region
        => Segment.TryFindStruct(RegionName, out ShmemRegion r) ? r : throw new InvalidOperationException($"no {RegionName}");

    /// <summary>Lays out a toc over the region with <paramref name="count"/> queues of <paramref name="ringSize"/> bytes under keys 1..count.</summary>
    public ShmToc CreateQueues(int count, long ringSize)
    {
        ShmToc toc = ShmToc.Create(TocMagic, Region);
        for (int i = 1; i <= count; i++)
        {
            ShmTocChunk chunk = toc.Allocate(ShmMq.SizeFor(ringSize));
            ShmMq.Create(chunk);
            toc.Insert((ulong)i, chunk);
        }
        return toc;
    }

    /// <summary>Queue <paramref name="key"/> of the toc the creator laid out.</summary>
    public ShmMq Queue(int key, long ringSize)
    {
        ShmToc toc = ShmToc.Attach(TocMagic, Region);
        return ShmMq.Open(toc.LookupChunk((ulong)key, ShmMq.SizeFor(ringSize)));
    }

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
