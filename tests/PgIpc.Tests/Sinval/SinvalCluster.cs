/*-------------------------------------------------------------------------
 * SinvalCluster.cs
 *   A segment with participant slots and the shared invalidation queue, as
 *   the sinval tests (and their worker processes) use it; plus the message
 *   numbering the tests check arrivals against.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sinval;

namespace PgIpc.Tests.Sinval;

internal sealed class SinvalCluster : IDisposable
{
    public ShmemSegment Segment { get; }
    public ProcArray Procs { get; }
    public SinvalQueue Queue { get; }

    private SinvalCluster(ShmemSegment segment, ProcArray procs, SinvalQueue queue)
    {
        Segment = segment;
        Procs = procs;
        Queue = queue;
    }

    public static SinvalCluster Create(IPgIpcPlatform platform, ProcArrayOptions? options = null)
    {
        options ??= new ProcArrayOptions(MaxBackends: 24, MaxAuxiliary: 2, MaxBackgroundWorkers: 2);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(options))
            .RequestAddinShmemSpace(SinvalQueue.ShmemName, SinvalQueue.ShmemSize(options.TotalProcs));
        ShmemSegment seg = ShmemSegment.Create(TestEnvironment.UniqueKey("si"), sizes, platform);
        try
        {
            ProcArray procs = ProcArray.Init(seg, options, out _);
            SinvalQueue queue = SinvalQueue.Init(seg, procs, out bool found);
            if (found)
                throw new InvalidOperationException("a fresh segment already had a queue");
            return new SinvalCluster(seg, procs, queue);
        }
        catch
        {
            seg.Destroy();
            throw;
        }
    }

    /// <summary>The worker side: the structures another process made.</summary>
    public static SinvalCluster Attach(ShmemSegment seg)
    {
        ProcArray procs = ProcArray.Attach(seg);
        SinvalQueue queue = SinvalQueue.Init(seg, procs, out bool found);
        if (!found)
            throw new InvalidOperationException("the worker created the queue: the parent should have");
        return new SinvalCluster(seg, procs, queue);
    }

    /// <summary>Message number <paramref name="seq"/> from sender <paramref name="sender"/>: every field derived from both.</summary>
    public static SharedInvalidationMessage Message(uint sender, uint seq)
        => new((int)(seq % 7) - 3, sender, seq, unchecked(seq * 2654435761u ^ sender));

    /// <summary>True when <paramref name="m"/> is exactly what <see cref="Message"/> makes for its sender and number.</summary>
    public static bool IsIntact(in SharedInvalidationMessage m) => m == Message(m.DatabaseId, m.ObjectId);

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
