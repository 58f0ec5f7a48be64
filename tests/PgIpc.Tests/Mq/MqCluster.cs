/*-------------------------------------------------------------------------
 * MqCluster.cs
 *   A segment with participant slots and one large region that the shm_toc
 *   and shm_mq tests (and their worker processes) carve up.
 *-------------------------------------------------------------------------
 */
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;

namespace PgIpc.Tests.Mq;

internal sealed class MqCluster : IDisposable
{
    public const string RegionName = "test.mq";
    public const long RegionSize = 2 * 1024 * 1024;
    public const ulong TocMagic = 0x4D51_5445_5354_0001; // "MQTEST" 1

    public ShmemSegment Segment { get; }
    public ProcArray Procs { get; }

    private MqCluster(ShmemSegment segment, ProcArray procs)
    {
        Segment = segment;
        Procs = procs;
    }

    public static MqCluster Create(IPgIpcPlatform platform, string? key = null)
    {
        var options = new ProcArrayOptions(MaxBackends: 16, MaxAuxiliary: 2, MaxBackgroundWorkers: 2);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(options))
            .RequestAddinShmemSpace(ProcSignal.ShmemName, ProcSignal.ShmemSize(options.TotalProcs))
            .RequestAddinShmemSpace(PMSignal.ShmemName, PMSignal.ShmemSize())
            .RequestAddinShmemSpace(RegionName, RegionSize);
        ShmemSegment seg = ShmemSegment.Create(key ?? TestEnvironment.UniqueKey("mq"), sizes, platform);
        try
        {
            ProcArray procs = ProcArray.Init(seg, options, out _);
            ProcSignal.Init(seg, procs, out _);
            PMSignal.Init(seg, procs, out _);
            seg.InitStruct(RegionName, RegionSize, out _);
            return new MqCluster(seg, procs);
        }
        catch
        {
            seg.Destroy();
            throw;
        }
    }

    /// <summary>The worker side: the structures another process made.</summary>
    public static MqCluster Attach(ShmemSegment seg) => new(seg, ProcArray.Attach(seg));

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
        if (Segment.IsAttached)
        {
            if (Segment.IsCreator)
                Segment.Destroy();
            else
                Segment.Dispose();
        }
    }
}
