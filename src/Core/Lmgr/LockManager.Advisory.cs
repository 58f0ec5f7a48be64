/*-------------------------------------------------------------------------
 * LockManager.Advisory.cs
 *   Advisory locks: locks on keys the application chooses, in shared or
 *   exclusive mode, at session or transaction (scope) level, waiting or
 *   trying (PostgreSQL's pg_advisory_lock family).
 *
 * NOTES
 *   An advisory lock is an ordinary heavyweight lock on an Advisory tag,
 *   ShareLock for the shared form and ExclusiveLock for the exclusive one,
 *   as adt/lockfuncs.c takes them: it queues, is seen by the deadlock
 *   detector and pg_locks like any other lock. Session locks survive
 *   ReleaseAll(Transaction); both go when the participant leaves. As in
 *   PostgreSQL, a session lock taken twice must be unlocked twice.
 *
 *   Mirrors src/backend/utils/adt/lockfuncs.c.
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;

namespace PgIpc.Lmgr;

public sealed partial class LockManager
{
    private static LockMode AdvisoryMode(bool exclusive) => exclusive ? LockMode.Exclusive : LockMode.Share;

    /// <summary>pg_advisory_lock / pg_advisory_lock_shared (session) or pg_advisory_xact_lock (transaction scope): waits for the key's lock.</summary>
    public void AdvisoryLock(Participant me, long key, bool exclusive = true, LockScope scope = LockScope.Session)
        => Acquire(me, LockTag.Advisory(key), AdvisoryMode(exclusive), scope);

    /// <summary>pg_try_advisory_lock and friends: true when the key's lock was taken without waiting.</summary>
    public bool TryAdvisoryLock(Participant me, long key, bool exclusive = true, LockScope scope = LockScope.Session)
        => Acquire(me, LockTag.Advisory(key), AdvisoryMode(exclusive), scope, dontWait: true) != LockAcquireResult.NotAvailable;

    /// <summary>pg_advisory_unlock / pg_advisory_unlock_shared: gives back one session-level hold; false (as PostgreSQL's warning) when not held.</summary>
    public bool AdvisoryUnlock(Participant me, long key, bool exclusive = true)
    {
        LockTag tag = LockTag.Advisory(key);
        LockMode mode = AdvisoryMode(exclusive);
        LocalLockTable local = LocalFor(me);
        ref LocalLock ll = ref local.Locks.Find(new LocalLockKey(in tag, mode));
        if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref ll) || ll.NSession <= 0)
            return false;
        Release(me, tag, mode, LockScope.Session);
        return true;
    }

    /// <summary>pg_advisory_unlock_all: gives back every session-level advisory lock of <paramref name="me"/>; returns how many (tag, mode) locks.</summary>
    public int AdvisoryUnlockAll(Participant me)
    {
        LocalLockTable local = LocalFor(me);
        int n = 0;
        LocalLockMap map = local.Locks;
        for (int s = 0; s < map.SlotCount; s++)
        {
            if (!map.IsUsed(s) || map.KeyAt(s).Tag.Type != LockTagType.Advisory || map.ValueAt(s).NSession <= 0)
                continue;
            LocalLockKey key = map.KeyAt(s);
            for (long i = map.ValueAt(s).NSession; i > 0; i--)
                Release(me, key.Tag, key.Mode, LockScope.Session);
            n++;
        }
        return n;
    }
}
