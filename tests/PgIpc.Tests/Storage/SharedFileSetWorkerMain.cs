/*-------------------------------------------------------------------------
 * SharedFileSetWorkerMain.cs
 *   Parallel worker modes for SharedFileSetTests (hooked into
 *   ParallelWorkerMain's switch by one line):
 *     parallel-fileset-write   attaches to the SharedFileSet under KeyFileSet,
 *                              creates the file "worker<n>" and writes Count
 *                              longs ValueOf(n, i) to it, then closes it
 *                              (its reference to the set goes when the
 *                              worker detaches from the segment)
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Parallel;
using PgIpc.Postmaster;
using PgIpc.Storage;

namespace PgIpc.Tests.Storage;

internal static class SharedFileSetWorkerMain
{
    public const string ModePrefix = "parallel-fileset-";
    public const ulong KeyFileSet = 200;
    public const int Count = 20_000;

    public static long ValueOf(int worker, int i) => ((long)worker << 40) | (uint)(i * 2654435761u);

    public static void Run(string mode, ParallelWorker w)
    {
        if (mode != ModePrefix + "write")
            throw new InvalidOperationException($"unknown file set worker mode {mode}");
        PgIpc.Mq.ShmTocChunk chunk = w.Toc.LookupChunk(KeyFileSet, SharedFileSet.Size);
        SharedFileSet set = SharedFileSet.Attach(chunk, w.Segment, w.Cluster.TempFileSpace());
        using (BufFile f = set.CreateFile($"worker{w.WorkerNumber}"))
        {
            Span<byte> one = stackalloc byte[8];
            for (int i = 0; i < Count; i++)
            {
                MemoryMarshal.Write(one, ValueOf(w.WorkerNumber, i));
                f.Write(one);
            }
        }
    }
}
