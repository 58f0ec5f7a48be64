/*-------------------------------------------------------------------------
 * ShmMqHandle.Cancel.cs
 *   Send and Receive with a CancellationToken.
 *
 * NOTES
 *   For the call's duration the token's cancel sets this side's latch (the
 *   one a blocked send or receive sleeps on, ShmMqHandle.Wait.cs), and the
 *   sleep, after it wakes and resets the latch, throws
 *   OperationCanceledException when the token is cancelled. A spin before
 *   the sleep is bounded (microseconds) and not interrupted.
 *
 *   What a cancel leaves is what a nowait call that returned WouldBlock
 *   leaves: a receive keeps the part of a message it has (the next Receive
 *   goes on with it); a send may have written part of its message, and the
 *   next Send on the handle must be the same message (as after WouldBlock).
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;

namespace PgIpc.Mq;

public sealed unsafe partial class ShmMqHandle
{
    // The token of the Send / Receive in progress (default otherwise); checked by Sleep after each wake-up.
    private CancellationToken _cancellation;

    /// <summary>
    /// Sends one message, waiting for room as <see cref="Send(ReadOnlySpan{byte}, bool, bool)"/> does, until
    /// <paramref name="cancellationToken"/> is cancelled: then throws <see cref="OperationCanceledException"/>, and the
    /// next Send on this handle must be this same message (part of it may be in the queue, as after WouldBlock).
    /// </summary>
    public ShmMqResult Send(ReadOnlySpan<byte> message, CancellationToken cancellationToken)
    {
        if (!cancellationToken.CanBeCanceled)
            return Send(message);
        cancellationToken.ThrowIfCancellationRequested();
        using CancellationTokenRegistration reg = Arm(cancellationToken);
        try
        {
            return Send(message);
        }
        finally
        {
            _cancellation = default;
        }
    }

    /// <summary>
    /// Receives one message, waiting as <see cref="Receive(out ReadOnlySpan{byte}, bool)"/> does, until
    /// <paramref name="cancellationToken"/> is cancelled: then throws <see cref="OperationCanceledException"/>; a
    /// message received in part is kept for the next Receive.
    /// </summary>
    public ShmMqResult Receive(out ReadOnlySpan<byte> message, CancellationToken cancellationToken)
    {
        if (!cancellationToken.CanBeCanceled)
            return Receive(out message);
        cancellationToken.ThrowIfCancellationRequested();
        using CancellationTokenRegistration reg = Arm(cancellationToken);
        try
        {
            return Receive(out message);
        }
        finally
        {
            _cancellation = default;
        }
    }

    private CancellationTokenRegistration Arm(CancellationToken cancellationToken)
    {
        _cancellation = cancellationToken;
        return cancellationToken.UnsafeRegister(static p => ((Participant)p!).SetLatch(), _me);
    }

    private void ThrowCanceled() => throw new OperationCanceledException(_cancellation);
}
