/*-------------------------------------------------------------------------
 * HarnessChild.cs
 *   The child-process plumbing the two-process harnesses share (contend,
 *   pingpong, mq): start this program again with a child verb, wait for a
 *   handshake without hanging on a dead child, reap it, kill it on error.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using PgIpc.Postmaster;

namespace PgIpc.Perf.Contention;

internal static class HarnessChild
{
    /// <summary>How long a handshake with the child may take before the run fails.</summary>
    public static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Starts this program as <paramref name="verb"/> with <paramref name="args"/> (through the dotnet host when that runs us).</summary>
    public static Process Start(string verb, params string[] args)
    {
        ProcessStartInfo psi = ThisProgram.StartInfo(verb, args);
        return Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
    }

    /// <summary>
    /// Waits for <paramref name="condition"/>; fails if the child exits first or the handshake times out. With
    /// <paramref name="spin"/> it polls with a CPU pause (timing-sensitive handshakes), else it sleeps 1 ms.
    /// </summary>
    public static void WaitUntil(Func<bool> condition, Process child, string label, string what, bool spin = false)
    {
        long deadline = Stopwatch.GetTimestamp() + (long)(HandshakeTimeout.TotalSeconds * Stopwatch.Frequency);
        while (!condition())
        {
            if (child.HasExited)
                throw new InvalidOperationException($"{label} child {child.Id} exited with {child.ExitCode} before {what}");
            if (Stopwatch.GetTimestamp() > deadline)
                throw new TimeoutException($"{label} child {child.Id} did not reach {what} within {HandshakeTimeout}");
            if (spin)
                Thread.SpinWait(20);
            else
                Thread.Sleep(1);
        }
    }

    /// <summary>Waits up to 10 s for the child to finish and requires exit code 0.</summary>
    public static void WaitExit(Process child, string label)
    {
        if (!child.WaitForExit(TimeSpan.FromSeconds(10)))
            throw new TimeoutException($"{label} child {child.Id} did not exit within 10 s of its last step");
        if (child.ExitCode != 0)
            throw new InvalidOperationException($"{label} child {child.Id} exited with {child.ExitCode}");
    }

    /// <summary>Kills the child if it still runs, reaps it and releases the Process.</summary>
    public static void KillIfRunning(Process? child)
    {
        if (child is null)
            return;
        if (!child.HasExited)
        {
            child.Kill();
            child.WaitForExit();
        }
        child.Dispose();
    }

    /// <summary>The 1, 5 and 15 minute load averages, or "n/a" where /proc/loadavg does not exist.</summary>
    public static string LoadAverage()
    {
        try
        {
            string[] f = File.ReadAllText("/proc/loadavg").Split(' ');
            return $"{f[0]} {f[1]} {f[2]}";
        }
        catch (IOException)
        {
            return "n/a";
        }
    }
}
