/*-------------------------------------------------------------------------
 * TestHelpers.cs
 *   The helpers fixtures used to copy: polling for a state with a bound
 *   (Poll) and starting a worker process attached to a segment (Workers).
 *
 * NOTES
 *   A bound only turns a wait that would hang into a failure; no test
 *   asserts how long something took. Each caller keeps the bound and the
 *   polling interval it had (the defaults are the most common: 30 s, 2 ms).
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Shmem;

namespace PgIpc.Tests;

/// <summary>Waits for a state by polling, bounded so that a state never reached fails instead of hanging.</summary>
internal static class Poll
{
    /// <summary>The usual bound: 30 s.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Polls <paramref name="condition"/> every <paramref name="pollMs"/> ms until it holds (true) or
    /// <paramref name="patience"/> (default <see cref="Patience"/>) has passed (false).
    /// </summary>
    public static bool Until(Func<bool> condition, TimeSpan? patience = null, int pollMs = 2)
    {
        long deadline = Environment.TickCount64 + (long)(patience ?? Patience).TotalMilliseconds;
        while (!condition())
        {
            if (Environment.TickCount64 > deadline)
                return false;
            Thread.Sleep(pollMs);
        }
        return true;
    }

    /// <summary>As <see cref="Until"/>, failing the test ("timed out after N s waiting for <paramref name="what"/>").</summary>
    public static void WaitFor(Func<bool> condition, string what, TimeSpan? patience = null, int pollMs = 2)
    {
        if (!Until(condition, patience, pollMs))
            Assert.Fail($"timed out after {(patience ?? Patience).TotalSeconds} s waiting for {what}");
    }
}

/// <summary>Starts worker processes (<see cref="ChildWorker"/>) the way fixtures need them.</summary>
internal static class Workers
{
    /// <summary>Starts a worker for <paramref name="backend"/> and adds it to <paramref name="owned"/> (which the fixture's TearDown disposes).</summary>
    public static ChildWorker Start(string backend, ICollection<ChildWorker> owned)
    {
        ChildWorker w = ChildWorker.Start(backend);
        owned.Add(w);
        return w;
    }

    /// <summary>
    /// Starts a worker for <paramref name="backend"/>, adds it to <paramref name="owned"/> (which the fixture's
    /// TearDown disposes), attaches it to <paramref name="segment"/> and sends each of <paramref name="then"/>
    /// (a subsystem's attach command, typically), each awaited with ChildWorker's reply timeout.
    /// </summary>
    public static ChildWorker StartAttached(string backend, ICollection<ChildWorker> owned, ShmemHandle segment, params string[] then)
    {
        ChildWorker w = Start(backend, owned);
        w.Send($"attach {segment}");
        foreach (string command in then)
            w.Send(command);
        return w;
    }
}
