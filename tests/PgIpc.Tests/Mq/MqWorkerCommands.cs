/*-------------------------------------------------------------------------
 * MqWorkerCommands.cs
 *   The worker process's commands for the shm_mq tests, and the message
 *   generator both sides use.
 *
 * NOTES
 *   mq-attach                         -> ok   (after "attach <handle>": the MqCluster another process made)
 *   mq-send <key> <ring> <seed> <n> <max> [spin|nospin] -> ok <procno>  (a thread joins, becomes the sender
 *                                         of queue <key> and sends n generated messages, then detaches)
 *   mq-recv <key> <ring> <seed> <n> <max> [spin|nospin] -> ok <procno>  (a thread joins, becomes the receiver
 *                                         and checks n generated messages, then detaches)
 *                                         spin / nospin sets the handle's SpinBeforeSleep (default: as built)
 *   mq-result                         -> ok <"done" or the failure> (waits up to 60 s for that thread)
 *   The thread's peer check is the parent's pid (the test process).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Globalization;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Mq;

internal static class MqWorkerCommands
{
    private static MqCluster? s_cluster;
    private static Thread? s_thread;
    private static string s_result = "pending";

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "mq-attach":
                s_cluster = MqCluster.Attach(seg ?? throw new InvalidOperationException("worker is not attached"));
                reply = "ok";
                return true;
            case "mq-send":
            case "mq-recv":
            {
                MqCluster c = s_cluster ?? throw new InvalidOperationException("mq-attach first");
                bool send = a[0] == "mq-send";
                int key = Int(a[1]), n = Int(a[4]);
                long ring = long.Parse(a[2], CultureInfo.InvariantCulture);
                ulong seed = ulong.Parse(a[3], CultureInfo.InvariantCulture);
                int max = Int(a[5]);
                bool? spin = a.Length > 6 ? a[6] switch
                {
                    "spin" => true,
                    "nospin" => false,
                    _ => throw new ArgumentException($"expected spin or nospin, got \"{a[6]}\""),
                } : null;
                using var ready = new ManualResetEventSlim();
                int procno = -1;
                s_result = "pending";
                s_thread = new Thread(() =>
                {
                    Participant? me = null;
                    try
                    {
                        me = c.Procs.Join();
                        ShmMq mq = c.Queue(key, ring);
                        if (send)
                            mq.SetSender(me);
                        else
                            mq.SetReceiver(me);
                        procno = me.ProcNumber;
                        ready.Set();
                        var peer = new ShmMqProcessPeer(c.Segment.Platform.Processes, c.Procs.SupervisorPid);
                        using ShmMqHandle h = send ? mq.AttachAsSender(me, peer) : mq.AttachAsReceiver(me, peer);
                        if (spin is bool on)
                            h.SpinBeforeSleep = on;
                        string result = send ? MqMessages.SendAll(h, n, seed, max) : MqMessages.ReceiveAll(h, n, seed, max);
                        Volatile.Write(ref s_result, result);
                    }
                    catch (Exception ex)
                    {
                        Volatile.Write(ref s_result, $"{ex.GetType().Name}: {ex.Message}");
                        ready.Set();
                    }
                    finally
                    {
                        me?.Dispose();
                    }
                }) { IsBackground = true, Name = a[0] };
                s_thread.Start();
                if (!ready.Wait(TimeSpan.FromSeconds(30)))
                    throw new TimeoutException("the queue thread did not start");
                if (procno < 0)
                    throw new InvalidOperationException(Volatile.Read(ref s_result));
                reply = $"ok {procno}";
                return true;
            }
            case "mq-result":
                s_thread?.Join(TimeSpan.FromSeconds(60));
                reply = "ok " + Volatile.Read(ref s_result);
                return true;
            default:
                return false;
        }
    }

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);
}

/// <summary>
/// Deterministic messages: message i of seed s has a pseudo-random size in [0, max] and pseudo-random bytes; when
/// at least 12 bytes long it starts with i (4 bytes) and ends with the FNV-1a hash of the bytes before (8 bytes).
/// </summary>
internal static class MqMessages
{
    public static int SizeOf(ulong seed, int i, int max)
    {
        ulong r = Mix(seed ^ ((ulong)i * 0x9E3779B97F4A7C15UL));
        // A quarter of the messages are tiny, to mix many small ones with the big ones.
        return (r & 3) == 0 ? (int)((r >> 8) % 16) : (int)((r >> 8) % (ulong)(max + 1));
    }

    public static void Fill(Span<byte> m, ulong seed, int i)
    {
        ulong x = Mix(seed + (ulong)i);
        for (int j = 0; j < m.Length; j++)
        {
            if ((j & 7) == 0)
                x = Mix(x);
            m[j] = (byte)(x >> ((j & 7) * 8));
        }
        if (m.Length >= 12)
        {
            BinaryPrimitives.WriteInt32LittleEndian(m, i);
            BinaryPrimitives.WriteUInt64LittleEndian(m[^8..], Fnv(m[..^8]));
        }
    }

    /// <summary>Null when <paramref name="m"/> is message <paramref name="i"/>, else what is wrong.</summary>
    public static string? Check(ReadOnlySpan<byte> m, ulong seed, int i, int max, byte[] scratch)
    {
        int size = SizeOf(seed, i, max);
        if (m.Length != size)
            return $"message {i}: {m.Length} bytes, expected {size}";
        if (m.Length >= 12)
        {
            if (BinaryPrimitives.ReadInt32LittleEndian(m) != i)
                return $"message {i}: carries index {BinaryPrimitives.ReadInt32LittleEndian(m)} (out of order)";
            if (BinaryPrimitives.ReadUInt64LittleEndian(m[^8..]) != Fnv(m[..^8]))
                return $"message {i}: checksum mismatch";
        }
        Span<byte> expected = scratch.AsSpan(0, size);
        Fill(expected, seed, i);
        if (!m.SequenceEqual(expected))
            return $"message {i}: content differs at byte {m.CommonPrefixLength(expected)}";
        return null;
    }

    public static string SendAll(ShmMqHandle h, int n, ulong seed, int max)
    {
        byte[] buf = new byte[max];
        for (int i = 0; i < n; i++)
        {
            Span<byte> m = buf.AsSpan(0, SizeOf(seed, i, max));
            Fill(m, seed, i);
            ShmMqResult r = h.Send(m);
            if (r != ShmMqResult.Success)
                return $"send {i}: {r}";
        }
        return "done";
    }

    public static string ReceiveAll(ShmMqHandle h, int n, ulong seed, int max)
    {
        byte[] scratch = new byte[max];
        for (int i = 0; i < n; i++)
        {
            ShmMqResult r = h.Receive(out ReadOnlySpan<byte> m);
            if (r != ShmMqResult.Success)
                return $"receive {i}: {r}";
            string? bad = Check(m, seed, i, max, scratch);
            if (bad is not null)
                return bad;
        }
        return "done";
    }

    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong Fnv(ReadOnlySpan<byte> b)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte x in b)
            h = (h ^ x) * 1099511628211UL;
        return h;
    }
}
