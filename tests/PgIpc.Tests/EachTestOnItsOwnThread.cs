/*-------------------------------------------------------------------------
 * EachTestOnItsOwnThread.cs
 *   Runs every test method on a thread of its own (NUnit's RequiresThread,
 *   applied to the whole assembly).
 *
 * NOTES
 *   Under Wine (the Windows leg) a test that fails leaves the thread it ran
 *   on unusable: the assertion's exception leaves the test method, which
 *   NUnit invoked by reflection, and the next exception thrown on that
 *   thread can hang the process (seen: a failed test followed by a test that
 *   catches an exception ran its body to the end and never reached its
 *   TearDown; the run then hung until CI's timeout, with no summary and no
 *   name for the failure). On a thread of its own a failure ends with its
 *   thread, and the rest of the run goes on and reports it. The cost is one
 *   thread start per test. Participants are per thread (Participant.Current),
 *   and SetUp, the test and TearDown run on the same thread, so nothing a
 *   test joins outlives it by accident.
 *
 *   NUnit applies assembly attributes after it has built the tree, so this
 *   one sees every test method. RequiresThreadAttribute implements
 *   ApplyToTest explicitly (its public ApplyToTest only copies properties),
 *   hence the interface-typed field. Windows only: on Linux NUnit skips a
 *   test that requires a thread ("Apartment state cannot be set on this
 *   platform"), and the problem it works around is Wine's.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using NUnit.Framework.Interfaces;
using NUnit.Framework.Internal;

[assembly: PgIpc.Tests.EachTestOnItsOwnThread]

namespace PgIpc.Tests;

[AttributeUsage(AttributeTargets.Assembly)]
public sealed class EachTestOnItsOwnThreadAttribute : NUnitAttribute, IApplyToTest
{
    private static readonly IApplyToTest s_requiresThread = new RequiresThreadAttribute();

    public void ApplyToTest(Test test)
    {
        // Only where it is needed: elsewhere NUnit refuses RequiresThread ("Apartment state cannot be set on this
        // platform") and skips the test.
        if (!OperatingSystem.IsWindows())
            return;
        if (test is TestMethod)
            s_requiresThread.ApplyToTest(test);
        foreach (ITest child in test.Tests)
            if (child is Test t)
                ApplyToTest(t);
    }
}
