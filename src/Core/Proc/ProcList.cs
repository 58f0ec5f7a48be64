/*-------------------------------------------------------------------------
 * ProcList.cs
 *   Doubly-linked lists of participant slots by procno, linked through a
 *   pair of PGPROC fields (PostgreSQL's proclist): push at the head or the
 *   tail, delete, pop the head, test membership.
 *
 * NOTES
 *   A list is a head and a tail procno kept by its owner (an LWLock's
 *   WaitHead / WaitTail, a condition variable's WakeupHead / WakeupTail);
 *   the links live in the slots, so a list costs no memory of its own and
 *   holds each slot at most once per link pair. Links are procnos, never
 *   pointers: each process maps the segment at its own address. -1
 *   (PgProc.InvalidProcNumber) ends a list; a slot that is not on a list
 *   has both links -1.
 *
 *   Which pair of fields links a list is a type argument (ILinks: LwWait
 *   for LWLock wait queues, CvWait for condition-variable wake-up lists),
 *   as proclist.h passes the offset of the link field. The selectors are
 *   structs with static members, so each instantiation is specialised by
 *   the JIT: no allocation, no indirection, the same code as a list written
 *   out for one pair of fields.
 *
 *   No locking here: the caller holds whatever protects the list (the
 *   LWLock's wait-list lock, the condition variable's spinlock).
 *
 *   Mirrors src/include/storage/proclist.h and proclist_types.h.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Proc;

/// <summary>Doubly-linked lists of slots by procno through a pair of PGPROC link fields (proclist.h).</summary>
internal static unsafe class ProcList
{
    /// <summary>Selects the pair of PGPROC fields a list is linked through (proclist.h's link_offset).</summary>
    internal interface ILinks
    {
        static abstract ref int Next(PgProc* p);
        static abstract ref int Prev(PgProc* p);
    }

    /// <summary>LWLock wait queues: <see cref="PgProc.LwWaitNext"/> / <see cref="PgProc.LwWaitPrev"/>.</summary>
    internal readonly struct LwWait : ILinks
    {
        public static ref int Next(PgProc* p) => ref p->LwWaitNext;
        public static ref int Prev(PgProc* p) => ref p->LwWaitPrev;
    }

    /// <summary>Condition-variable wake-up lists: <see cref="PgProc.CvWaitNext"/> / <see cref="PgProc.CvWaitPrev"/>.</summary>
    internal readonly struct CvWait : ILinks
    {
        public static ref int Next(PgProc* p) => ref p->CvWaitNext;
        public static ref int Prev(PgProc* p) => ref p->CvWaitPrev;
    }

    /// <summary>Puts <paramref name="procno"/> first (proclist_push_head).</summary>
    public static void PushHead<TLinks>(PgProc* procs, int procno, ref int head, ref int tail) where TLinks : struct, ILinks
    {
        PgProc* p = procs + procno;
        TLinks.Prev(p) = PgProc.InvalidProcNumber;
        TLinks.Next(p) = head;
        if (head == PgProc.InvalidProcNumber)
            tail = procno;
        else
            TLinks.Prev(procs + head) = procno;
        head = procno;
    }

    /// <summary>Puts <paramref name="procno"/> last (proclist_push_tail).</summary>
    public static void PushTail<TLinks>(PgProc* procs, int procno, ref int head, ref int tail) where TLinks : struct, ILinks
    {
        PgProc* p = procs + procno;
        TLinks.Next(p) = PgProc.InvalidProcNumber;
        TLinks.Prev(p) = tail;
        if (tail == PgProc.InvalidProcNumber)
            head = procno;
        else
            TLinks.Next(procs + tail) = procno;
        tail = procno;
    }

    /// <summary>Takes <paramref name="procno"/>, which is on the list, off it and clears its links (proclist_delete).</summary>
    public static void Delete<TLinks>(PgProc* procs, int procno, ref int head, ref int tail) where TLinks : struct, ILinks
    {
        PgProc* p = procs + procno;
        int prev = TLinks.Prev(p), next = TLinks.Next(p);
        if (prev == PgProc.InvalidProcNumber)
            head = next;
        else
            TLinks.Next(procs + prev) = next;
        if (next == PgProc.InvalidProcNumber)
            tail = prev;
        else
            TLinks.Prev(procs + next) = prev;
        TLinks.Next(p) = PgProc.InvalidProcNumber;
        TLinks.Prev(p) = PgProc.InvalidProcNumber;
    }

    /// <summary>Takes the first slot off the list and returns it, or -1 when the list is empty (proclist_pop_head_node).</summary>
    public static int PopHead<TLinks>(PgProc* procs, ref int head, ref int tail) where TLinks : struct, ILinks
    {
        int first = head;
        if (first != PgProc.InvalidProcNumber)
            Delete<TLinks>(procs, first, ref head, ref tail);
        return first;
    }

    /// <summary>True when <paramref name="procno"/> is on the list: it is the head or has a predecessor (proclist_contains).</summary>
    public static bool Contains<TLinks>(PgProc* procs, int procno, int head) where TLinks : struct, ILinks
        => head == procno || TLinks.Prev(procs + procno) != PgProc.InvalidProcNumber;
}
