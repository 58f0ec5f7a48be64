/*-------------------------------------------------------------------------
 * PowerLossFileLayer.cs
 *   A test layer under the durable files (WAL segments, the control file,
 *   relation files) that simulates a power loss: it remembers which writes
 *   no fsync covered yet (and which creations, renames and removals no
 *   directory fsync covered), and at the simulated crash puts every file
 *   back to its last durable content, then keeps, drops or tears (at a
 *   512-byte sector boundary) each write that was not durable, and keeps a
 *   prefix of each directory's undurable entry changes, undoing the rest.
 *
 * NOTES
 *   Installed as DurableFileIO.Hook (process-wide); files outside its root
 *   pass straight through, so other tests running meanwhile are unaffected.
 *   Every write under the root reaches the real file (the processes read it
 *   back as the page cache would show it), after its old bytes were read
 *   (the pre-image that a crash restores). fsync itself is not called: only
 *   the simulated durability matters, and skipping it keeps rounds fast.
 *
 *   PowerLoss() is the moment the machine dies: from then on every fsync of
 *   a tracked file or directory throws (the process would never see it
 *   return), while writes still land in the "page cache", so a committer
 *   that wrote its WAL but had not fsynced it leaves a torn tail candidate.
 *   The workload stops (its threads see the fsync errors or the flag), the
 *   cluster is stopped with an immediate shutdown, then Crash(seed) rewrites
 *   the files. One global lock: the layer is for tests, not for speed.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using Microsoft.Win32.SafeHandles;
using PgIpc.Platform;

namespace PgIpc.Tests.Wal;

/// <summary>What the crash did to the writes and entries that were not durable.</summary>
internal sealed class PowerLossReport
{
    public int Kept, Dropped, TornWal, TornData, DirOpsKept, DirOpsUndone;
    /// <summary>Torn data-file writes: file name and byte offset.</summary>
    public readonly List<(string File, long Offset)> TornDataPages = [];
    /// <summary>Torn WAL writes: segment file name, the write's offset and how many of its bytes reached the disk.</summary>
    public readonly List<(string File, long Offset, int KeptBytes, int Length)> TornWalWrites = [];

    public override string ToString()
        => $"kept {Kept}, dropped {Dropped}, torn WAL writes {TornWal}, torn data pages {TornData}, entry changes kept {DirOpsKept}, undone {DirOpsUndone}";
}

/// <summary>How the crash treats each write that was not durable.</summary>
internal enum PowerLossPolicy
{
    /// <summary>Keep, drop or tear each one (a third each).</summary>
    Random,
    /// <summary>As Random, but the last undurable write of the WAL is always torn (the torn WAL tail variant).</summary>
    TearWalTail,
    /// <summary>Keep every one (the layer does nothing: a test that must fail under it shows the drops are what it tests).</summary>
    KeepAll,
}

internal sealed class PowerLossFileLayer : IDurableFileIO, IDisposable
{
    public const int Sector = 512;

    private sealed class FileState(string path)
    {
        public string Path = path;
        public readonly List<PendingWrite> Pending = [];
    }

    private sealed record PendingWrite(long Offset, byte[] Old, long LengthBefore, byte[] New);

    private abstract record DirOp(string Directory);
    private sealed record CreateOp(string Directory, string Path) : DirOp(Directory);
    private sealed record MoveOp(string Directory, string From, string To, byte[]? Overwritten) : DirOp(Directory);
    private sealed record DeleteOp(string Directory, string Path, byte[] Content) : DirOp(Directory);

    private readonly string _root;
    private readonly object _lock = new();
    private ConditionalWeakTable<SafeFileHandle, FileState> _handles = new();
    private readonly Dictionary<string, FileState> _byPath = [];
    private readonly List<DirOp> _dirOps = [];
    private volatile bool _lost;

    public PowerLossFileLayer(string root)
    {
        _root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root)) + Path.DirectorySeparatorChar;
        if (Interlocked.CompareExchange(ref DurableFileIO.Hook, this, null) is not null)
            throw new InvalidOperationException("another power-loss layer is installed");
    }

    /// <summary>The machine is off: fsyncs of tracked files and directories throw from now on.</summary>
    public bool Lost => _lost;

    /// <summary>Writes under the root (all time).</summary>
    public long Writes;

    /// <summary>fsyncs of tracked files (all time).</summary>
    public long Fsyncs;

    public void Dispose() => Interlocked.CompareExchange(ref DurableFileIO.Hook, null, this);

    private bool Tracked(string path, out string full)
    {
        full = Path.GetFullPath(path);
        // The root itself too (the data directory's own fsync covers the relation files' entries).
        return (Path.TrimEndingDirectorySeparator(full) + Path.DirectorySeparatorChar).StartsWith(_root, StringComparison.Ordinal);
    }

    /// <summary>Cuts the power (see the banner).</summary>
    public void PowerLoss() => _lost = true;

    private void ThrowIfLost()
    {
        if (_lost)
            throw new IOException("simulated power loss: the machine is off");
    }

    void IDurableFileIO.Opened(SafeFileHandle handle, string path, bool created)
    {
        if (!Tracked(path, out string full))
            return;
        lock (_lock)
        {
            if (created || !_byPath.TryGetValue(full, out FileState? st))
                _byPath[full] = st = new FileState(full);
            if (created)
                _dirOps.Add(new CreateOp(Path.GetDirectoryName(full)!, full));
            _handles.AddOrUpdate(handle, st);
        }
    }

    void IDurableFileIO.Write(SafeFileHandle handle, ReadOnlySpan<byte> data, long offset)
    {
        if (!_handles.TryGetValue(handle, out FileState? st))
        {
            RandomAccess.Write(handle, data, offset);
            return;
        }
        lock (_lock)
        {
            long length = RandomAccess.GetLength(handle);
            byte[] old = new byte[Math.Max(0, Math.Min(data.Length, length - offset))];
            int got = 0;
            while (got < old.Length)
            {
                int n = RandomAccess.Read(handle, old.AsSpan(got), offset + got);
                if (n == 0)
                    break;
                got += n;
            }
            RandomAccess.Write(handle, data, offset);
            st.Pending.Add(new PendingWrite(offset, old, length, data.ToArray()));
            Writes++;
        }
    }

    void IDurableFileIO.Flush(SafeFileHandle handle)
    {
        if (!_handles.TryGetValue(handle, out FileState? st))
        {
            RandomAccess.FlushToDisk(handle);
            return;
        }
        lock (_lock)
        {
            ThrowIfLost();
            st.Pending.Clear(); // every write to the file so far is durable (whichever handle made it)
            Fsyncs++;
        }
    }

    void IDurableFileIO.Move(string from, string to, bool overwrite)
    {
        if (!Tracked(from, out string f) | !Tracked(to, out string t))
        {
            File.Move(from, to, overwrite);
            return;
        }
        lock (_lock)
        {
            byte[]? overwritten = overwrite && File.Exists(t) ? File.ReadAllBytes(t) : null;
            File.Move(f, t, overwrite);
            _byPath.Remove(t);
            if (_byPath.Remove(f, out FileState? st))
            {
                st.Path = t;
                _byPath[t] = st;
            }
            _dirOps.Add(new MoveOp(Path.GetDirectoryName(t)!, f, t, overwritten));
        }
    }

    void IDurableFileIO.Delete(string path)
    {
        if (!Tracked(path, out string full))
        {
            File.Delete(path);
            return;
        }
        lock (_lock)
        {
            if (!File.Exists(full))
                return;
            byte[] content = File.ReadAllBytes(full);
            File.Delete(full);
            _byPath.Remove(full);
            _dirOps.Add(new DeleteOp(Path.GetDirectoryName(full)!, full, content));
        }
    }

    void IDurableFileIO.FsyncDirectory(IFileSync files, string directory)
    {
        if (!Tracked(directory, out string dir))
        {
            files.FsyncDirectory(directory);
            return;
        }
        dir = Path.TrimEndingDirectorySeparator(dir);
        lock (_lock)
        {
            ThrowIfLost();
            _dirOps.RemoveAll(o => o.Directory == dir);
        }
    }

    /// <summary>
    /// The crash (the cluster is stopped and no thread writes any more): every tracked file back to its durable
    /// content, then each undurable write kept, dropped or torn per <paramref name="policy"/> and
    /// <paramref name="seed"/>, each directory's undurable entry changes kept up to a random prefix. Then the layer
    /// forgets everything and the power is back on.
    /// </summary>
    public PowerLossReport Crash(int seed, PowerLossPolicy policy = PowerLossPolicy.Random)
    {
        var rnd = new Random(seed);
        var rep = new PowerLossReport();
        lock (_lock)
        {
            _lost = true;
            FileState? walTail = null;
            if (policy == PowerLossPolicy.TearWalTail)
                walTail = _byPath.Values.Where(s => IsWal(s.Path) && s.Pending.Count > 0 && !Path.GetFileName(s.Path).StartsWith("xlogtemp", StringComparison.Ordinal)).OrderBy(s => Path.GetFileName(s.Path), StringComparer.Ordinal).LastOrDefault();
            foreach (FileState st in _byPath.Values.OrderBy(s => s.Path, StringComparer.Ordinal))
            {
                if (st.Pending.Count == 0 || !File.Exists(st.Path))
                    continue;
                bool wal = IsWal(st.Path);
                using SafeFileHandle h = File.OpenHandle(st.Path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
                for (int i = st.Pending.Count - 1; i >= 0; i--)
                {
                    PendingWrite w = st.Pending[i];
                    RandomAccess.Write(h, w.Old, w.Offset);
                    RandomAccess.SetLength(h, w.LengthBefore);
                }
                for (int i = 0; i < st.Pending.Count; i++)
                {
                    PendingWrite w = st.Pending[i];
                    int sectors = (w.New.Length + Sector - 1) / Sector;
                    int fate = policy == PowerLossPolicy.KeepAll ? 0 : rnd.Next(3);
                    if (st == walTail && i == st.Pending.Count - 1)
                        fate = 2;
                    if (fate == 2 && sectors < 2)
                        fate = rnd.Next(2);
                    switch (fate)
                    {
                        case 0:
                            RandomAccess.Write(h, w.New, w.Offset);
                            rep.Kept++;
                            break;
                        case 1:
                            rep.Dropped++;
                            break;
                        default:
                            // Sectors reach the disk in order up to the cut: a prefix of whole sectors survives.
                            int keep = rnd.Next(1, sectors) * Sector;
                            RandomAccess.Write(h, w.New.AsSpan(0, keep), w.Offset);
                            if (wal)
                            {
                                rep.TornWal++;
                                rep.TornWalWrites.Add((Path.GetFileName(st.Path), w.Offset, keep, w.New.Length));
                            }
                            else
                            {
                                rep.TornData++;
                                rep.TornDataPages.Add((Path.GetFileName(st.Path), w.Offset));
                            }
                            break;
                    }
                }
            }
            foreach (IGrouping<string, DirOp> g in _dirOps.GroupBy(o => o.Directory))
            {
                List<DirOp> ops = [.. g];
                int survive = policy == PowerLossPolicy.KeepAll ? ops.Count : rnd.Next(ops.Count + 1);
                rep.DirOpsKept += survive;
                for (int i = ops.Count - 1; i >= survive; i--)
                {
                    rep.DirOpsUndone++;
                    switch (ops[i])
                    {
                        case CreateOp c:
                            File.Delete(c.Path);
                            break;
                        case MoveOp m:
                            File.Move(m.To, m.From, overwrite: false);
                            if (m.Overwritten is { } content)
                                File.WriteAllBytes(m.To, content);
                            break;
                        case DeleteOp d:
                            File.WriteAllBytes(d.Path, d.Content);
                            break;
                    }
                }
            }
            _byPath.Clear();
            _dirOps.Clear();
            _handles = new ConditionalWeakTable<SafeFileHandle, FileState>();
            _lost = false;
        }
        return rep;
    }

    private static bool IsWal(string path) => path.Contains($"{Path.DirectorySeparatorChar}pg_wal{Path.DirectorySeparatorChar}", StringComparison.Ordinal);
}
