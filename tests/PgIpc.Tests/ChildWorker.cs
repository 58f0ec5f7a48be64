/*-------------------------------------------------------------------------
 * ChildWorker.cs
 *   Starts and drives a test worker process; never lets one outlive a test.
 *
 * NOTES
 *   Every child is registered in a process-wide list; at most MaxChildren
 *   run at once. Each reply is awaited with a timeout: a hung child fails
 *   its test (and is killed) instead of hanging the run. Dispose kills the
 *   child (SIGKILL on Unix, TerminateProcess on Windows) if it is still
 *   running; the assembly-level teardown kills any that a test forgot.
 *-------------------------------------------------------------------------
 */
using System.Collections.Concurrent;
using System.Diagnostics;
using NUnit.Framework;
using PgIpc.Postmaster;

namespace PgIpc.Tests;

internal sealed class ChildWorker : IDisposable
{
    public const int MaxChildren = 8;
    private static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);
    private static readonly List<ChildWorker> s_live = [];
    private static readonly Lock s_lock = new();

    private readonly Process _process;
    private readonly BlockingCollection<string?> _lines = new();
    private readonly Thread _reader;

    private ChildWorker(Process p)
    {
        _process = p;
        // A dedicated reader thread, not the thread pool: replies arrive even when tests block pool
        // threads, and nothing depends on thread injection (slow under Wine).
        _reader = new Thread(ReadLoop) { IsBackground = true, Name = $"worker {p.Id} stdout" };
        _reader.Start();
    }

    private void ReadLoop()
    {
        try
        {
            string? line;
            while ((line = _process.StandardOutput.ReadLine()) is not null)
                _lines.Add(line);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException)
        {
        }
        _lines.Add(null); // end of output: the worker exited
    }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Starts a worker using <paramref name="backend"/>.</summary>
    public static ChildWorker Start(string backend)
    {
        lock (s_lock)
        {
            s_live.RemoveAll(c => c.HasExited);
            if (s_live.Count >= MaxChildren)
                Assert.Fail($"test started more than {MaxChildren} live worker processes");
        }
        ProcessStartInfo psi = ThisProgram.StartInfo(TestWorker.Verb, "--backend", backend);
        psi.RedirectStandardInput = true;
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        Process p = Process.Start(psi) ?? throw new InvalidOperationException("could not start worker");
        p.ErrorDataReceived += (_, _) => { };
        p.BeginErrorReadLine();
        var child = new ChildWorker(p);
        lock (s_lock)
            s_live.Add(child);
        return child;
    }

    /// <summary>Sends a command and returns the reply's values after "ok"; fails the test on "error" or timeout.</summary>
    public string Send(string command, TimeSpan? timeout = null)
    {
        string reply = SendRaw(command, timeout);
        if (!reply.StartsWith("ok", StringComparison.Ordinal))
            Assert.Fail($"worker {Pid} answered \"{command}\" with: {reply}");
        return reply.Length > 3 ? reply[3..] : "";
    }

    /// <summary>Sends a command and returns the whole reply line (ok ... or error ...).</summary>
    public string SendRaw(string command, TimeSpan? timeout = null)
    {
        Begin(command);
        return EndRaw(command, timeout);
    }

    /// <summary>Sends a command without waiting; collect the reply with <see cref="End"/>. Lets a test work while the child does.</summary>
    public void Begin(string command)
    {
        try
        {
            _process.StandardInput.WriteLine(command);
            _process.StandardInput.Flush();
        }
        catch (IOException)
        {
            throw new InvalidOperationException($"worker {Pid} exited before \"{command}\" (exit code {ExitCodeOrNull()})");
        }
    }

    /// <summary>The reply to a command sent with <see cref="Begin"/>, as <see cref="Send"/> returns it.</summary>
    public string End(string command, TimeSpan? timeout = null)
    {
        string reply = EndRaw(command, timeout);
        if (!reply.StartsWith("ok", StringComparison.Ordinal))
            Assert.Fail($"worker {Pid} answered \"{command}\" with: {reply}");
        return reply.Length > 3 ? reply[3..] : "";
    }

    /// <summary>The whole reply line to a command sent with <see cref="Begin"/>.</summary>
    public string EndRaw(string command, TimeSpan? timeout = null)
    {
        if (!_lines.TryTake(out string? line, timeout ?? DefaultTimeout))
        {
            Kill();
            Assert.Fail($"worker {Pid} did not answer \"{command}\" within {(timeout ?? DefaultTimeout).TotalSeconds} s; killed");
        }
        if (line is null)
        {
            _lines.Add(null); // keep the end marker for later calls
            throw new InvalidOperationException($"worker {Pid} exited while running \"{command}\" (exit code {ExitCodeOrNull()})");
        }
        return line;
    }

    private string ExitCodeOrNull()
    {
        try { return _process.WaitForExit(1000) ? _process.ExitCode.ToString() : "still running"; }
        catch (InvalidOperationException) { return "unknown"; }
    }

    /// <summary>The child's exit code once it has exited within <paramref name="timeout"/>; null if it is still running.</summary>
    public int? WaitForExitCode(TimeSpan timeout)
        => _process.WaitForExit(timeout) ? _process.ExitCode : null;

    /// <summary>Kills the child at once (SIGKILL on Unix) and waits for it to be reaped.</summary>
    public void Kill()
    {
        try
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException) { }
        catch (ArgumentOutOfRangeException)
        {
            // Wine: walking the process tree reads the start time of a process that is exiting meanwhile ("Not a
            // valid Win32 FileTime"); the worker itself still goes. Its own children are the test's to kill.
            try { _process.Kill(); } catch (InvalidOperationException) { }
        }
        _process.WaitForExit(10_000);
    }

    /// <summary>Closes stdin (the worker detaches and exits) and waits; kills it if it does not exit.</summary>
    public void Close()
    {
        try { _process.StandardInput.Close(); } catch (IOException) { }
        if (!_process.WaitForExit(10_000))
            Kill();
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
        lock (s_lock)
            s_live.Remove(this);
    }

    /// <summary>Kills every child still running (assembly teardown).</summary>
    public static void KillAll()
    {
        ChildWorker[] all;
        lock (s_lock)
            all = [.. s_live];
        foreach (ChildWorker c in all)
            c.Dispose();
    }
}
