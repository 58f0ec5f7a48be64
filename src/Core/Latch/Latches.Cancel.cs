/*-------------------------------------------------------------------------
 * Latches.Cancel.cs
 *   WaitLatch with a CancellationToken and a TimeSpan timeout.
 *
 * NOTES
 *   A cancel sets the waiter's latch (CancellationToken.UnsafeRegister ->
 *   SetLatch, as Checkpointer.Run does for its stop token), which ends the
 *   wait through the ordinary wake-up path; the wait then throws
 *   OperationCanceledException. Nothing new sits in the wait itself: the
 *   latch protocol already makes a set from any thread wake the owner, and
 *   a cancel that comes before the registration runs its callback at once,
 *   so it is never lost. The latch stays set afterwards, which a latch
 *   user's loop tolerates by construction (an early wake-up).
 *
 *   Without a token that can be cancelled this is the plain WaitLatch: no
 *   registration, nothing allocated.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Latch;

public static unsafe partial class Latches
{
    /// <summary>
    /// Waits on the latch (WaitLatch) until one of <paramref name="events"/>, <paramref name="timeout"/>
    /// (<see cref="Timeout.InfiniteTimeSpan"/>: none; otherwise <see cref="WaitEvents.Timeout"/> is implied) or
    /// <paramref name="cancellationToken"/>'s cancel, which sets the latch and then throws
    /// <see cref="OperationCanceledException"/>. With a token that can be cancelled, <paramref name="events"/> must
    /// include <see cref="WaitEvents.LatchSet"/> (the cancel is a latch set).
    /// </summary>
    public static WaitEvents WaitLatch(Participant me, WaitEvents events, TimeSpan timeout, WaitEventId waitEvent = default,
        CancellationToken cancellationToken = default)
    {
        int timeoutMs;
        if (timeout == Timeout.InfiniteTimeSpan)
        {
            timeoutMs = -1;
            events &= ~WaitEvents.Timeout;
        }
        else
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(timeout, TimeSpan.Zero);
            double ms = Math.Ceiling(timeout.TotalMilliseconds);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(ms, int.MaxValue, nameof(timeout));
            timeoutMs = (int)ms;
            events |= WaitEvents.Timeout;
        }
        return WaitLatch(me, events, timeoutMs, waitEvent, cancellationToken);
    }

    /// <summary>
    /// <see cref="WaitLatch(Participant, WaitEvents, int, WaitEventId)"/> that also ends when
    /// <paramref name="cancellationToken"/> is cancelled: the cancel sets the latch, and the wait then throws
    /// <see cref="OperationCanceledException"/>. With a token that can be cancelled, <paramref name="events"/> must
    /// include <see cref="WaitEvents.LatchSet"/>.
    /// </summary>
    public static WaitEvents WaitLatch(Participant me, WaitEvents events, int timeoutMs, WaitEventId waitEvent,
        CancellationToken cancellationToken)
    {
        if (!cancellationToken.CanBeCanceled)
            return WaitLatch(me, events, timeoutMs, waitEvent);
        ArgumentNullException.ThrowIfNull(me);
        if ((events & WaitEvents.LatchSet) == 0)
            throw new ArgumentException("a cancellable WaitLatch needs LatchSet in its events: the cancel sets the latch", nameof(events));
        cancellationToken.ThrowIfCancellationRequested();
        using CancellationTokenRegistration reg = cancellationToken.UnsafeRegister(static p => ((Participant)p!).SetLatch(), me);
        WaitEvents got = WaitLatch(me, events, timeoutMs, waitEvent);
        cancellationToken.ThrowIfCancellationRequested();
        return got;
    }
}
