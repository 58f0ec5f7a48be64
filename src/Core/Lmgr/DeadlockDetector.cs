/*-------------------------------------------------------------------------
 * DeadlockDetector.cs
 *   Finds cycles in the waits-for graph of heavyweight lock waiters, and
 *   resolves those that a rearrangement of wait queues can resolve.
 *
 * NOTES
 *   Run by a waiter after deadlock_timeout, with every partition lock held
 *   exclusive (so the graph stands still). The graph has two kinds of
 *   edges out of a waiter W on lock L:
 *     - hard: to every other holder of a mode of L that conflicts with W's
 *       request (only its release lets W go);
 *     - soft: to every waiter ahead of W in L's queue whose request
 *       conflicts with W's (W waits behind it only because of queue order).
 *   A cycle through the checker made only of hard edges is a deadlock: the
 *   checker leaves its queue and raises DeadlockDetectedException, which
 *   breaks the cycle; the others go on. A cycle with soft edges may vanish
 *   if a queue is reordered: the search tries reversing each soft edge of
 *   the cycle found (a constraint "waiter before blocker"), turns the set
 *   of constraints into new orders of the affected queues by topological
 *   sort (keeping the rest of each queue in its order), and looks for
 *   cycles again, recursively, within PostgreSQL's bounds (MaxBackends
 *   active constraints, 4 x MaxBackends remembered). When an order with no
 *   cycle exists it is installed and the queues' waiters that can now go
 *   are granted and woken; when none does, it is a hard deadlock.
 *
 *   All work arrays are allocated once per process (the process's view of
 *   the lock manager) and used under the partition locks only, so one
 *   check at a time in the whole cluster uses them.
 *
 *   Mirrors src/backend/storage/lmgr/deadlock.c (DeadLockCheck,
 *   DeadLockCheckRecurse, TestConfiguration, FindLockCycle,
 *   ExpandConstraints, TopoSort); without lock groups or autovacuum.
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;

namespace PgIpc.Lmgr;

/// <summary>What a deadlock check found.</summary>
internal enum DeadlockResult
{
    None,
    Soft,
    Hard,
}

/// <summary>One edge of a deadlock cycle: process <paramref name="Pid"/> (slot <paramref name="ProcNumber"/>) waits for <paramref name="Mode"/> on <paramref name="Tag"/>.</summary>
public readonly record struct DeadlockInfo(int Pid, int ProcNumber, LockTag Tag, LockMode Mode);

internal sealed unsafe class DeadlockDetector
{
    private struct Edge
    {
        public int Waiter;
        public int Blocker;
        public int Pred;
        public int Link;
    }

    private struct WaitOrder
    {
        public long LockOffset;
        public int Start;
        public int NProcs;
    }

    private readonly LockManager _lm;
    private readonly int _maxBackends;
    private readonly int[] _visited;
    private int _nVisited;
    private readonly int[] _topoProcs;
    private readonly int[] _beforeConstraints;
    private readonly int[] _afterConstraints;
    private readonly WaitOrder[] _waitOrders;
    private int _nWaitOrders;
    private readonly int[] _waitOrderProcs;
    private readonly Edge[] _curConstraints;
    private int _nCurConstraints;
    private readonly int _maxCurConstraints;
    private readonly Edge[] _possibleConstraints;
    private int _nPossibleConstraints;
    private readonly int _maxPossibleConstraints;
    private readonly DeadlockInfo[] _details;
    private int _nDetails;

    public DeadlockDetector(LockManager lm, int maxBackends)
    {
        _lm = lm;
        _maxBackends = maxBackends;
        _visited = new int[maxBackends];
        _topoProcs = new int[maxBackends];
        _beforeConstraints = new int[maxBackends];
        _afterConstraints = new int[maxBackends];
        _waitOrders = new WaitOrder[maxBackends];
        _waitOrderProcs = new int[maxBackends];
        _maxCurConstraints = maxBackends;
        _curConstraints = new Edge[maxBackends];
        _maxPossibleConstraints = maxBackends * 4;
        _possibleConstraints = new Edge[_maxPossibleConstraints];
        _details = new DeadlockInfo[maxBackends + 1];
    }

    /// <summary>DeadLockCheck for slot <paramref name="procno"/> (every partition lock held exclusive).</summary>
    public DeadlockResult Check(int procno, out DeadlockInfo[]? cycle)
    {
        cycle = null;
        _nCurConstraints = 0;
        _nPossibleConstraints = 0;
        _nWaitOrders = 0;
        if (DeadLockCheckRecurse(procno))
        {
            // Once more without rearrangements, for the details of the cycle as it is.
            _nWaitOrders = 0;
            if (FindLockCycle(procno, 0, out _))
                cycle = _details.AsSpan(0, _nDetails).ToArray();
            else
                cycle = [new DeadlockInfo(_lm.PidOf(procno), procno, default, LockMode.NoLock)];
            return DeadlockResult.Hard;
        }
        for (int i = 0; i < _nWaitOrders; i++)
        {
            var lockp = _lm.At<LockEntry>(_waitOrders[i].LockOffset);
            lockp->WaitHead = PgProc.InvalidProcNumber;
            lockp->WaitTail = PgProc.InvalidProcNumber;
            lockp->WaitCount = 0;
            for (int j = 0; j < _waitOrders[i].NProcs; j++)
                _lm.QueueInsertBefore(lockp, _waitOrderProcs[_waitOrders[i].Start + j], PgProc.InvalidProcNumber);
            _lm.ProcLockWakeup(lockp);
        }
        return _nWaitOrders > 0 ? DeadlockResult.Soft : DeadlockResult.None;
    }

    /// <summary>True when no arrangement of the queues avoids a cycle (from the current constraints on).</summary>
    private bool DeadLockCheckRecurse(int proc)
    {
        int nEdges = TestConfiguration(proc);
        if (nEdges < 0)
            return true;
        if (nEdges == 0)
            return false;
        if (_nCurConstraints >= _maxCurConstraints)
            return true;
        int oldPossible = _nPossibleConstraints;
        bool savedList;
        if (_nPossibleConstraints + nEdges + _maxBackends <= _maxPossibleConstraints)
        {
            _nPossibleConstraints += nEdges;
            savedList = true;
        }
        else
        {
            savedList = false;
        }
        for (int i = 0; i < nEdges; i++)
        {
            if (!savedList && i > 0 && nEdges != TestConfiguration(proc))
                throw new PgIpcException("inconsistent results during deadlock check");
            _curConstraints[_nCurConstraints] = _possibleConstraints[oldPossible + i];
            _nCurConstraints++;
            if (!DeadLockCheckRecurse(proc))
                return false;
            _nCurConstraints--;
        }
        _nPossibleConstraints = oldPossible;
        return true;
    }

    /// <summary>0: no cycle; -1: a hard cycle or contradictory constraints; n &gt; 0: a soft cycle, its n soft edges stored after the possible constraints.</summary>
    private int TestConfiguration(int startProc)
    {
        int softFound = 0;
        int softBase = _nPossibleConstraints;
        if (_nPossibleConstraints + _maxBackends > _maxPossibleConstraints)
            return -1;
        if (!ExpandConstraints(_nCurConstraints))
            return -1;
        for (int i = 0; i < _nCurConstraints; i++)
        {
            if (FindLockCycle(_curConstraints[i].Waiter, softBase, out int n))
            {
                if (n == 0)
                    return -1;
                softFound = n;
            }
            if (FindLockCycle(_curConstraints[i].Blocker, softBase, out n))
            {
                if (n == 0)
                    return -1;
                softFound = n;
            }
        }
        if (FindLockCycle(startProc, softBase, out int m))
        {
            if (m == 0)
                return -1;
            softFound = m;
        }
        return softFound;
    }

    private bool FindLockCycle(int checkProc, int softBase, out int nSoftEdges)
    {
        _nVisited = 0;
        _nDetails = 0;
        nSoftEdges = 0;
        return FindLockCycleRecurse(checkProc, 0, softBase, ref nSoftEdges);
    }

    private bool FindLockCycleRecurse(int checkProc, int depth, int softBase, ref int nSoftEdges)
    {
        for (int i = 0; i < _nVisited; i++)
        {
            if (_visited[i] != checkProc)
                continue;
            if (i == 0)
            {
                _nDetails = depth; // back at the start: a cycle; the outer levels fill the details
                return true;
            }
            return false; // a cycle that does not include the start
        }
        if (_nVisited >= _visited.Length)
            return false;
        _visited[_nVisited++] = checkProc;

        LockProcState* s = _lm.ProcState(checkProc);
        if (s->WaitStatus != (int)LockWaitStatus.Waiting || s->WaitLockOffset == 0)
            return false;
        long lockOff = s->WaitLockOffset;
        var lockp = _lm.At<LockEntry>(lockOff);
        var waitMode = (LockMode)s->WaitMode;
        int conflictMask = LockModes.ConflictMask(waitMode);

        // Hard edges: holders of conflicting modes.
        long off = lockp->ProcLocksHead;
        for (int guard = _lm.ProcLockCapacity; off != 0 && guard > 0; guard--)
        {
            var pl = _lm.At<ProcLockEntry>(off);
            int proc = pl->ProcNumber;
            if (proc != checkProc && (pl->HoldMask & conflictMask) != 0 && (uint)proc < (uint)_maxBackends
                && FindLockCycleRecurse(proc, depth + 1, softBase, ref nSoftEdges))
            {
                Record(depth, checkProc, lockp, waitMode);
                return true;
            }
            off = pl->NextOnLock;
        }

        // Soft edges: conflicting waiters ahead in the queue (in the proposed order, if there is one).
        int orderIndex = -1;
        for (int i = 0; i < _nWaitOrders; i++)
        {
            if (_waitOrders[i].LockOffset == lockOff)
            {
                orderIndex = i;
                break;
            }
        }
        if (orderIndex >= 0)
        {
            WaitOrder o = _waitOrders[orderIndex];
            for (int i = 0; i < o.NProcs; i++)
            {
                int proc = _waitOrderProcs[o.Start + i];
                if (proc == checkProc)
                    break;
                if (SoftEdge(checkProc, proc, conflictMask, depth, lockp, waitMode, softBase, ref nSoftEdges))
                    return true;
            }
        }
        else
        {
            int proc = lockp->WaitHead;
            for (int guard = lockp->WaitCount; proc != PgProc.InvalidProcNumber && guard > 0; guard--)
            {
                if (proc == checkProc)
                    break;
                if (SoftEdge(checkProc, proc, conflictMask, depth, lockp, waitMode, softBase, ref nSoftEdges))
                    return true;
                proc = _lm.ProcState(proc)->WaitNext;
            }
        }
        return false;
    }

    private bool SoftEdge(int checkProc, int proc, int conflictMask, int depth, LockEntry* lockp, LockMode waitMode, int softBase, ref int nSoftEdges)
    {
        if (((1 << _lm.ProcState(proc)->WaitMode) & conflictMask) == 0)
            return false;
        if (!FindLockCycleRecurse(proc, depth + 1, softBase, ref nSoftEdges))
            return false;
        Record(depth, checkProc, lockp, waitMode);
        if (softBase + nSoftEdges < _possibleConstraints.Length)
        {
            ref Edge e = ref _possibleConstraints[softBase + nSoftEdges];
            e.Waiter = checkProc;
            e.Blocker = proc;
            e.Pred = 0;
            e.Link = 0;
            nSoftEdges++;
        }
        return true;
    }

    private void Record(int depth, int checkProc, LockEntry* lockp, LockMode waitMode)
    {
        if (depth < _details.Length)
            _details[depth] = new DeadlockInfo(_lm.PidOf(checkProc), checkProc, lockp->Tag, waitMode);
    }

    /// <summary>ExpandConstraints: turns the first <paramref name="nConstraints"/> current constraints into queue orders; false if contradictory.</summary>
    private bool ExpandConstraints(int nConstraints)
    {
        int nWaitOrderProcs = 0;
        _nWaitOrders = 0;
        // Backwards: the last-added constraint is the only one that can fail.
        for (int i = nConstraints - 1; i >= 0; i--)
        {
            long lockOff = _lm.ProcState(_curConstraints[i].Waiter)->WaitLockOffset;
            bool have = false;
            for (int j = _nWaitOrders - 1; j >= 0; j--)
            {
                if (_waitOrders[j].LockOffset == lockOff)
                {
                    have = true;
                    break;
                }
            }
            if (have)
                continue;
            var lockp = _lm.At<LockEntry>(lockOff);
            int size = lockp->WaitCount;
            if (nWaitOrderProcs + size > _waitOrderProcs.Length || _nWaitOrders >= _waitOrders.Length)
                return false;
            _waitOrders[_nWaitOrders] = new WaitOrder { LockOffset = lockOff, Start = nWaitOrderProcs, NProcs = size };
            nWaitOrderProcs += size;
            if (!TopoSort(lockp, lockOff, i + 1, _waitOrders[_nWaitOrders].Start))
                return false;
            _nWaitOrders++;
        }
        return true;
    }

    /// <summary>TopoSort: an order of the lock's queue where each constraint's waiter comes before its blocker, moving as little as possible.</summary>
    private bool TopoSort(LockEntry* lockp, long lockOff, int nConstraints, int orderingStart)
    {
        int queueSize = lockp->WaitCount;
        int proc = lockp->WaitHead;
        for (int i = 0; i < queueSize; i++)
        {
            if (proc == PgProc.InvalidProcNumber)
                return false;
            _topoProcs[i] = proc;
            proc = _lm.ProcState(proc)->WaitNext;
        }
        Array.Clear(_beforeConstraints, 0, queueSize);
        Array.Clear(_afterConstraints, 0, queueSize);
        for (int i = 0; i < nConstraints; i++)
        {
            ref Edge c = ref _curConstraints[i];
            if (_lm.ProcState(c.Waiter)->WaitLockOffset != lockOff)
                continue;
            int j = Array.LastIndexOf(_topoProcs, c.Waiter, queueSize - 1, queueSize);
            int k = Array.LastIndexOf(_topoProcs, c.Blocker, queueSize - 1, queueSize);
            if (j < 0 || k < 0)
                return false;
            _beforeConstraints[j]++;
            c.Pred = j;
            c.Link = _afterConstraints[k];
            _afterConstraints[k] = i + 1;
        }
        // Backwards: output the last proc with no remaining before-constraints each time.
        int last = queueSize - 1;
        for (int i = queueSize - 1; i >= 0; i--)
        {
            while (last >= 0 && _topoProcs[last] == PgProc.InvalidProcNumber)
                last--;
            int j;
            for (j = last; j >= 0; j--)
            {
                if (_topoProcs[j] != PgProc.InvalidProcNumber && _beforeConstraints[j] == 0)
                    break;
            }
            if (j < 0)
                return false;
            _waitOrderProcs[orderingStart + i] = _topoProcs[j];
            _topoProcs[j] = PgProc.InvalidProcNumber;
            for (int k = _afterConstraints[j]; k > 0; k = _curConstraints[k - 1].Link)
                _beforeConstraints[_curConstraints[k - 1].Pred]--;
        }
        return true;
    }
}
