/*-------------------------------------------------------------------------
 * SkipAtDiscovery.cs
 *   Tests for another OS, or for a backend variant a test does not apply
 *   to, are reported SKIPPED: decided when NUnit builds the tests, never
 *   by an early return (which counts as a pass) nor by Assert.Ignore.
 *
 * NOTES
 *   Assert.Ignore / Assert.Inconclusive throw, and under Wine (the Windows
 *   leg) an exception out of a method NUnit invokes by reflection hangs the
 *   run, so .ci/run rejects them. These attributes only set the test's
 *   RunState to Skipped with a reason (as NUnit's own [Platform] does):
 *   NUnit then reports the test skipped without running anything, SetUp
 *   and the fixture's constructor included. A skipped fixture reports each
 *   of its tests skipped.
 *
 *   They compose with EachTestOnItsOwnThread (RequiresThread, applied to
 *   every test method on Windows after the tree is built): RequiresThread
 *   only sets a property and RequiresThread=true, never the RunState, so a
 *   skipped test stays skipped and a runnable one runs on its own thread.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using NUnit.Framework.Interfaces;
using NUnit.Framework.Internal;

[assembly: PgIpc.Tests.SkipVariantsAtDiscovery]

namespace PgIpc.Tests;

/// <summary>Operating systems as tests name them.</summary>
[Flags]
public enum Os
{
    Linux = 1,
    Windows = 2,
    /// <summary>macOS, the BSDs and any other Unix that is not Linux.</summary>
    OtherUnix = 4,
    Unix = Linux | OtherUnix,
}

/// <summary>Marks tests skipped at discovery time, without throwing.</summary>
public static class SkipAtDiscovery
{
    /// <summary>The OS this process runs on.</summary>
    public static Os Current
        => OperatingSystem.IsWindows() ? Os.Windows : OperatingSystem.IsLinux() ? Os.Linux : Os.OtherUnix;

    /// <summary>Skips <paramref name="test"/> with <paramref name="reason"/>, unless NUnit already decided not to run it.</summary>
    public static void Skip(Test test, string reason)
    {
        if (test.RunState is RunState.NotRunnable or RunState.Ignored or RunState.Skipped)
            return; // keep the earlier verdict (a broken test must stay NotRunnable) and its reason
        test.RunState = RunState.Skipped;
        test.Properties.Set(PropertyNames.SkipReason, reason);
    }

    /// <summary>
    /// One fixture of the backend <paramref name="name"/> for fixtures of what only that backend does: runnable where
    /// this machine has it, skipped elsewhere (so a Windows-only fixture is reported skipped on Linux, not passed).
    /// </summary>
    public static IEnumerable<TestFixtureData> OnlyBackend(string name)
    {
        var data = new TestFixtureData(name);
        if (!TestEnvironment.Backends().Contains(name))
        {
            data.RunState = RunState.Skipped;
            data.Properties.Set(PropertyNames.SkipReason, $"the {name} backend does not run on {Current}");
        }
        yield return data;
    }
}

/// <summary>
/// Runs a test, or every test of a fixture, only on <paramref name="os"/>; elsewhere it is reported skipped with
/// <paramref name="reason"/>, decided at discovery time.
/// </summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Method, AllowMultiple = false, Inherited = false)]
public sealed class OnlyOnAttribute(Os os, string reason) : NUnitAttribute, IApplyToTest
{
    public void ApplyToTest(Test test)
    {
        if ((os & SkipAtDiscovery.Current) == 0)
            SkipAtDiscovery.Skip(test, $"{SkipAtDiscovery.Current}: {reason}");
    }
}

/// <summary>
/// Runs a test of a fixture made once per backend or backend variant (its first argument, a string) only for the
/// variants <see cref="AppliesTo"/> accepts; for the others it is reported skipped, decided at discovery time (by
/// <see cref="SkipVariantsAtDiscoveryAttribute"/>, which sees the built tree: while NUnit applies a method's own
/// attributes the test has no parent yet, so no fixture arguments). A fixture subclasses this with its own rule (no
/// reflection on names, nothing that can throw while tests are built).
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false, Inherited = false)]
public abstract class OnlyForVariantsAttribute(string reason) : NUnitAttribute
{
    public string Reason => reason;

    public abstract bool AppliesTo(string variant);
}

/// <summary>Applies every <see cref="OnlyForVariantsAttribute"/> once NUnit has built the whole tree.</summary>
[AttributeUsage(AttributeTargets.Assembly)]
public sealed class SkipVariantsAtDiscoveryAttribute : NUnitAttribute, IApplyToTest
{
    public void ApplyToTest(Test test)
    {
        if (test is TestMethod { Method: { } method } && method.GetCustomAttributes<OnlyForVariantsAttribute>(true) is [var only, ..])
        {
            ITest? t = test.Parent;
            while (t is not null and not TestFixture)
                t = t.Parent;
            if (t is TestFixture { Arguments: [string variant, ..] } && !only.AppliesTo(variant))
                SkipAtDiscovery.Skip(test, $"{variant}: {only.Reason}");
        }
        foreach (ITest child in test.Tests)
            if (child is Test c)
                ApplyToTest(c);
    }
}
