/*-------------------------------------------------------------------------
 * DsmWorkerCommands.cs
 *   Worker commands of the DSM tests (hooked into TestWorker's default case).
 *
 * NOTES
 *     dsm-attach <handle>                    -> ok <size>   (attach <shmem handle> first)
 *     dsm-read <handle> <byteOffset>         -> ok <long>   (volatile load)
 *     dsm-write <handle> <byteOffset> <long> -> ok          (volatile store)
 *     dsm-detach <handle>                    -> ok
 *     dsm-refcount <handle>                  -> ok <n>
 *     dsm-cluster <key> <kind> <dataDir> <backend> -> ok    (the worker creates its own cluster)
 *     dsm-create <size>                      -> ok <handle>
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests.Dsm;

internal static class DsmWorkerCommands
{
    private static readonly Dictionary<uint, DsmSegment> s_segments = [];
    private static DsmCluster? s_own;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        if (!a[0].StartsWith("dsm-", StringComparison.Ordinal))
            return false;
        switch (a[0])
        {
            case "dsm-attach":
            {
                DsmSegment s = DsmSegment.Attach(Registry(seg), Handle(a[1]));
                s_segments[s.Handle] = s;
                reply = $"ok {s.Size}";
                return true;
            }
            case "dsm-read":
                reply = $"ok {Volatile.Read(ref Word(a[1], a[2]))}";
                return true;
            case "dsm-write":
                Volatile.Write(ref Word(a[1], a[2]), long.Parse(a[3], CultureInfo.InvariantCulture));
                reply = "ok";
                return true;
            case "dsm-detach":
                if (s_segments.Remove(Handle(a[1]), out DsmSegment? d))
                    d.Detach();
                reply = "ok";
                return true;
            case "dsm-pin":
                s_segments[Handle(a[1])].Pin();
                reply = "ok";
                return true;
            case "dsm-refcount":
                reply = $"ok {Registry(seg).ReferenceCount(Handle(a[1]))}";
                return true;
            case "dsm-cluster":
            {
                IPgIpcPlatform platform = PgIpcPlatform.Get(a[4]);
                s_own = DsmCluster.Create(platform, Enum.Parse<DsmImplementation>(a[2]), a[3], key: a[1]);
                reply = "ok";
                return true;
            }
            case "dsm-create":
            {
                DsmSegment s = DsmSegment.Create(Registry(seg), long.Parse(a[1], CultureInfo.InvariantCulture))!;
                s_segments[s.Handle] = s;
                reply = $"ok {s.Handle}";
                return true;
            }
            default:
                return false;
        }
    }

    private static DsmRegistry Registry(ShmemSegment? seg)
        => s_own?.Registry ?? DsmRegistry.Attach(seg ?? throw new InvalidOperationException("worker is not attached"));

    private static uint Handle(string s) => uint.Parse(s, CultureInfo.InvariantCulture);

    private static unsafe ref long Word(string handle, string offset)
    {
        if (!s_segments.TryGetValue(Handle(handle), out DsmSegment? s))
            throw new ArgumentException($"worker has no dynamic shared memory segment {handle}");
        return ref System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(s.Slice(long.Parse(offset, CultureInfo.InvariantCulture), 8))[0];
    }
}
