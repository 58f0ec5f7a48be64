/*-------------------------------------------------------------------------
 * LockManager.Local.cs
 *   The participant's side of the lock manager: its local lock table
 *   (LOCALLOCK: one entry per tag and mode it holds, with counts per scope),
 *   the hash map behind it, and what happens when the participant joins a
 *   slot and leaves it (the leave hook that releases its locks).
 *
 *   See LockManager.cs for the lock manager as a whole.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Latch;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Lmgr;

public sealed unsafe partial class LockManager
{
    // ------------------------------------------------------------------
    // Local lock tables and the participant's life
    // ------------------------------------------------------------------

    /// <summary>The participant's local lock table; made at its first call, after cleaning what a previous owner of the slot left.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private LocalLockTable LocalFor(Participant me)
    {
        ArgumentNullException.ThrowIfNull(me);
        LocalLockTable? t = (uint)me.ProcNumber < (uint)_local.Length ? _local[me.ProcNumber] : null;
        if (t is not null && ReferenceEquals(t.Owner, me))
        {
            if (me.IsDisposed)
                throw new ObjectDisposedException(nameof(Participant), $"participant {me.ProcNumber} has left");
            return t;
        }
        return LocalForSlow(me);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private LocalLockTable LocalForSlow(Participant me)
    {
        if (me.IsDisposed)
            throw new ObjectDisposedException(nameof(Participant), $"participant {me.ProcNumber} has left");
        if (!ReferenceEquals(me.ProcArray, _procs))
            throw new ArgumentException($"participant {me.ProcNumber} belongs to another cluster's slot array", nameof(me));
        var t = new LocalLockTable(me, _header->MaxLocksPerParticipant, _maxProcs);
        ClaimSlot(me);
        _local[me.ProcNumber] = t;
        return t;
    }

    /// <summary>
    /// The first lock call of a participant: under every partition lock, clean what a previous owner of the slot left
    /// (a process that died, a participant that left without releasing) and record the new owner.
    /// </summary>
    private void ClaimSlot(Participant me)
    {
        PgProc* proc = me.Array.Procs + me.ProcNumber;
        LockProcState* s = _procStates + me.ProcNumber;
        if (s->OwnerPid != 0)
            ClearFastPath(me, me.ProcNumber, s->OwnerPid, s->OwnerGeneration);
        AcquireAllPartitions(me);
        try
        {
            if (s->OwnerPid != 0)
                CleanProcLocked(me, me.ProcNumber);
            s->OwnerPid = Volatile.Read(ref proc->Pid);
            s->OwnerGeneration = Volatile.Read(ref proc->Generation);
        }
        finally
        {
            ReleaseAllPartitions(me);
        }
    }

    /// <summary>ProcArray's leave hook: a participant of this process is leaving; give up everything it holds.</summary>
    /// <param name="me">The participant (still open).</param>
    /// <param name="onItsThread">True on its own thread (Dispose); false at process exit or detach, from another thread.</param>
    private void OnParticipantLeaving(Participant me, bool onItsThread)
    {
        LocalLockTable? t = (uint)me.ProcNumber < (uint)_local.Length ? _local[me.ProcNumber] : null;
        if (t is null || !ReferenceEquals(t.Owner, me))
            return;
        // From another thread only when the owner is not inside the lock manager (its held-LWLock list is its own).
        if (!onItsThread && t.Busy)
            return;
        try
        {
            ReleaseAllLocked(me, t, LockScope.Session);
            LockProcState* s = _procStates + me.ProcNumber;
            ClearFastPath(me, me.ProcNumber, s->OwnerPid, s->OwnerGeneration);
            AcquireAllPartitions(me);
            try
            {
                CleanProcLocked(me, me.ProcNumber);
                s->OwnerPid = 0;
                s->OwnerGeneration = 0;
            }
            finally
            {
                ReleaseAllPartitions(me);
            }
        }
        catch (PgIpcException) when (!onItsThread)
        {
            // At exit a partition lock held by a dead process (LockHolderDiedException): what is left is cleaned by
            // whoever finds this slot's owner gone.
        }
        finally
        {
            _local[me.ProcNumber] = null;
        }
    }

    internal void AcquireAllPartitions(Participant me)
    {
        int taken = 0;
        try
        {
            for (; taken < NumPartitions; taken++)
                _partitionLocks[taken].Lock.Acquire(me, LWLockMode.Exclusive);
        }
        catch
        {
            while (taken > 0)
                _partitionLocks[--taken].Lock.Release(me);
            throw;
        }
    }

    internal void ReleaseAllPartitions(Participant me)
    {
        for (int i = NumPartitions - 1; i >= 0; i--)
            _partitionLocks[i].Lock.Release(me);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal LWLock* PartitionLock(uint hash) => &_partitionLocks[hash & (NumPartitions - 1)].Lock;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal long Offset(void* p) => (byte*)p - _base;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal LockProcState* ProcState(int procno) => _procStates + procno;

    internal byte* Base => _base;

    internal int ProcLockCapacity => _header->ProcLockCapacity;

    internal PgProc* PgProcOf(int procno) => _procs.Procs + procno;
}

/// <summary>The key of a local lock: tag and mode (LOCALLOCKTAG), with the tag's hash computed once per call.</summary>
internal readonly struct LocalLockKey : IEquatable<LocalLockKey>
{
    public readonly LockTag Tag;
    public readonly LockMode Mode;
    /// <summary>LockTag.HashOf(Tag): the shared tables' hash too.</summary>
    public readonly uint TagHash;

    public LocalLockKey(in LockTag tag, LockMode mode)
    {
        Tag = tag;
        Mode = mode;
        TagHash = LockTag.HashOf(in tag);
    }

    public bool Equals(LocalLockKey other) => TagHash == other.TagHash && Mode == other.Mode && Tag.Equals(other.Tag);

    public override bool Equals(object? obj) => obj is LocalLockKey k && Equals(k);

    public override int GetHashCode() => (int)(TagHash ^ ((uint)Mode * 0x9E3779B1u));
}

/// <summary>One lock a participant holds, in its local table (LOCALLOCK).</summary>
internal struct LocalLock
{
    /// <summary>Transaction-level acquires not yet released.</summary>
    public long NLocks;
    /// <summary>Session-level acquires not yet released.</summary>
    public long NSession;
    /// <summary>The tag's hash.</summary>
    public uint Hash;
    /// <summary>Segment offset of this participant's PROCLOCK (main-table locks; advisory).</summary>
    public long ProcLockOffset;
    /// <summary>Taken through the fast path (it may since have been moved to the main table).</summary>
    public bool FastPath;
    /// <summary>This lock counted itself in the strong-lock counters (a strong relation lock).</summary>
    public bool HoldsStrong;
}

/// <summary>A participant's process-local lock state: its LOCALLOCK table and fast-path use.</summary>
internal sealed class LocalLockTable(Participant owner, int capacity, int maxProcs)
{
    public readonly Participant Owner = owner;
    /// <summary>The local table: held locks, and idle entries (counts 0) kept so that locking the same tag again adds nothing.</summary>
    public readonly LocalLockMap Locks = new(Math.Max(4 * capacity, 64));
    /// <summary>Room for slot numbers (the dead-holder check), allocated once.</summary>
    public readonly int[] Scratch = new int[maxProcs];
    /// <summary>Fast-path slots in use (FastPathLocalUseCount).</summary>
    public int FastPathUsed;
    /// <summary>
    /// The owner is inside a lock-manager call (its held-LWLock list may be changing). Kept on the participant
    /// (<see cref="Participant.InLockManagerCall"/>, volatile), where its Dispose from another thread sees it.
    /// </summary>
    public bool Busy
    {
        get => Owner.InLockManagerCall;
        set => Owner.InLockManagerCall = value;
    }
}

/// <summary>
/// The LOCALLOCK hash table: open addressing with linear probing over a power-of-two array, keyed by tag and mode, the
/// tag's hash compared first. Entries are never deleted one by one: a released lock stays as an idle entry (counts 0);
/// when the table passes half full, it is rebuilt with the held entries only (and doubled if they alone fill half).
/// Steady use allocates nothing, also when it locks ever new tags: a rebuild at the same size reuses the arrays the
/// previous one dropped. One participant's thread uses it (the leave hook only when that thread is outside).
/// </summary>
internal sealed class LocalLockMap
{
    private LocalLockKey[] _keys;
    private LocalLock[] _values;
    private int _mask;
    // The arrays a rebuild at the same size dropped, kept for the next one: a participant that locks ever new tags
    // (and releases them) rebuilds every half table of idle entries, and must not allocate for it.
    private LocalLockKey[]? _spareKeys;
    private LocalLock[]? _spareValues;

    public LocalLockMap(int capacity)
    {
        int n = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(capacity, 16));
        _keys = new LocalLockKey[n];
        _values = new LocalLock[n];
        _mask = n - 1;
    }

    /// <summary>Entries in use (held and idle).</summary>
    public int Count { get; private set; }

    /// <summary>Slots of the array (for enumeration with <see cref="IsUsed"/>, <see cref="KeyAt"/>, <see cref="ValueAt"/>).</summary>
    public int SlotCount => _keys.Length;

    public bool IsUsed(int i) => _keys[i].Tag.Type != LockTagType.Invalid;

    public ref LocalLockKey KeyAt(int i) => ref _keys[i];

    public ref LocalLock ValueAt(int i) => ref _values[i];

    /// <summary>The entry of <paramref name="key"/>, or a null reference.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref LocalLock Find(in LocalLockKey key)
    {
        LocalLockKey[] keys = _keys;
        for (int i = (int)key.TagHash & _mask; ; i = (i + 1) & _mask)
        {
            ref LocalLockKey k = ref keys[i];
            if (k.Tag.Type == LockTagType.Invalid)
                return ref Unsafe.NullRef<LocalLock>();
            if (k.Equals(key))
                return ref _values[i];
        }
    }

    /// <summary>The entry of <paramref name="key"/>, added (zeroed) when absent.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref LocalLock GetOrAdd(in LocalLockKey key, out bool exists)
    {
        ref LocalLock v = ref Find(in key);
        if (!Unsafe.IsNullRef(ref v))
        {
            exists = true;
            return ref v;
        }
        exists = false;
        return ref Add(in key);
    }

    private ref LocalLock Add(in LocalLockKey key)
    {
        if ((Count + 1) * 2 > _keys.Length)
            Rebuild(TrimIdleCount() * 2 + 2 > _keys.Length ? _keys.Length * 2 : _keys.Length);
        LocalLockKey[] keys = _keys;
        int i = (int)key.TagHash & _mask;
        while (keys[i].Tag.Type != LockTagType.Invalid)
            i = (i + 1) & _mask;
        keys[i] = key;
        _values[i] = default;
        Count++;
        return ref _values[i];
    }

    private int TrimIdleCount()
    {
        int held = 0;
        for (int i = 0; i < _keys.Length; i++)
            if (IsUsed(i) && _values[i].NLocks + _values[i].NSession > 0)
                held++;
        return held;
    }

    /// <summary>Drops the idle entries (the table is rebuilt with the held ones).</summary>
    public void TrimIdle() => Rebuild(_keys.Length);

    private void Rebuild(int size)
    {
        LocalLockKey[] oldKeys = _keys;
        LocalLock[] oldValues = _values;
        LocalLockKey[] keys;
        LocalLock[] values;
        if (_spareKeys is not null && _spareValues is not null && _spareKeys.Length == size)
        {
            keys = _spareKeys;
            values = _spareValues;
            Array.Clear(keys);
            Array.Clear(values);
        }
        else
        {
            keys = new LocalLockKey[size];
            values = new LocalLock[size];
        }
        int mask = size - 1, count = 0;
        for (int j = 0; j < oldKeys.Length; j++)
        {
            if (oldKeys[j].Tag.Type == LockTagType.Invalid || oldValues[j].NLocks + oldValues[j].NSession == 0)
                continue;
            int i = (int)oldKeys[j].TagHash & mask;
            while (keys[i].Tag.Type != LockTagType.Invalid)
                i = (i + 1) & mask;
            keys[i] = oldKeys[j];
            values[i] = oldValues[j];
            count++;
        }
        _keys = keys;
        _values = values;
        _mask = mask;
        Count = count;
        // Nobody holds a reference into the old arrays across a rebuild (only Add rebuilds, before it hands one out).
        _spareKeys = oldKeys.Length == size ? oldKeys : null;
        _spareValues = oldKeys.Length == size ? oldValues : null;
    }
}
