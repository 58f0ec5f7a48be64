/*-------------------------------------------------------------------------
 * Program.cs
 *   pgipc: the command-line face of PgIpc, on System.CommandLine.
 *
 *     pgipc demo [--backend linux|posix|windows] [--workers N] [--seconds S] [--buffers N] [--pages N] [--crash]
 *     pgipc demo --parallel [--backend name] [--workers N] [--rows N]
 *     pgipc inspect <handle> [--procs] [--allocations] [--buffers] [--locks] [--dsm] [--json]
 *     pgipc cleanup [--backend name] [--dry-run]
 *     pgipc cancel <handle> <pid>
 *     pgipc terminate <handle> <pid>
 *     pgipc backends
 *   `pgipc <command> --help` describes each.
 *
 * NOTES
 *   Each command is defined in a file of its own (*Command.cs: its options,
 *   their checks and its action); this file lists them, one line each, and
 *   owns the exit codes: 0 done, 1 the command failed (a PgIpcException:
 *   a segment that cannot be attached, a full table, ...), 2 the command
 *   line was refused (an unknown command or option, a missing argument, a
 *   bad value) with a message on stderr and nothing done.
 *
 *   The children the demos start are this executable run with a hidden
 *   verb (demo-child, parallel-demo-child) and internal arguments: they are
 *   dispatched before the parser, as before.
 *-------------------------------------------------------------------------
 */
using System.CommandLine;
using System.Globalization;
using System.Numerics;
using System.CommandLine.Help;
using PgIpc.Platform;

namespace PgIpc.Cli;

internal static class Program
{
    /// <summary>Exit code of a refused command line (nothing was done).</summary>
    public const int UsageError = 2;

    public static int Main(string[] args)
    {
        try
        {
            // The demos' children: internal arguments written by the supervisor, never typed by a user.
            if (args is [ParallelDemo.ChildVerb, ..])
                return ParallelDemo.RunChild(args[1..]);
            if (args is [Demo.ChildVerb, ..])
                return Demo.RunChild(args[1..]);
            return Run(args, Console.Out, Console.Error);
        }
        catch (Exception ex) when (ex is PgIpcException or ArgumentException)
        {
            Console.Error.WriteLine($"pgipc: {ex.Message}");
            return 1;
        }
    }

    /// <summary>Every command pgipc has: one line per command (each defined in its own file).</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("pgipc: a live multi-process PgIpc cluster, inspection of a running one's shared memory, cleanup of what a killed one left.");
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(CleanupCommand.Create());
        root.Subcommands.Add(WalDumpCommand.Create());
        root.Subcommands.Add(CancelCommand.Create());
        root.Subcommands.Add(TerminateCommand.Create());
        root.Subcommands.Add(BackendsCommand.Create());
        // pgipc alone: the list of commands, as `pgipc --help` (exit 0, as before).
        root.SetAction(r => new HelpAction().Invoke(r));
        return root;
    }

    /// <summary>Parses <paramref name="args"/> and runs the command, or refuses the command line with exit code 2.</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        // `pgipc help [command]`, as before: the same as `pgipc [command] --help`.
        if (args is ["help", .. var rest])
            args = [.. rest, "--help"];
        RootCommand root = BuildRoot();
        ParseResult parse = root.Parse(args);
        // --help (and --version) stand for themselves: `pgipc cleanup --dryrun --help` shows cleanup's help.
        if (parse.Errors.Count > 0 && parse.Action is not { ClearsParseErrors: true })
        {
            foreach (System.CommandLine.Parsing.ParseError e in parse.Errors)
                error.WriteLine($"pgipc: {e.Message}");
            error.WriteLine($"see 'pgipc {CommandPath(parse.CommandResult)}--help'");
            return UsageError;
        }
        var config = new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false };
        return parse.Invoke(config);
    }

    /// <summary>"inspect " for pgipc inspect's parse, "" for the root.</summary>
    private static string CommandPath(System.CommandLine.Parsing.CommandResult r)
    {
        var names = new List<string>();
        for (System.CommandLine.Parsing.CommandResult? c = r; c is not null && c.Command is not RootCommand; c = c.Parent as System.CommandLine.Parsing.CommandResult)
            names.Insert(0, c.Command.Name + " ");
        return string.Concat(names);
    }

    /// <summary>--backend: a backend by name; only those this machine has are accepted.</summary>
    public static Option<string?> BackendOption(string description)
    {
        var o = new Option<string?>("--backend") { Description = description, HelpName = "linux|posix|windows" };
        o.Validators.Add(r =>
        {
            string? name = r.GetValueOrDefault<string?>();
            if (name is null)
                return;
            string[] known = [.. PgIpcPlatform.Available().Select(p => p.Name)];
            if (!known.Contains(name))
                r.AddError($"--backend {name}: not a backend of this machine (it has {string.Join(", ", known)})");
        });
        return o;
    }

    /// <summary>The platform --backend names, or this machine's default.</summary>
    public static IPgIpcPlatform Platform(string? backend) => backend is null ? PgIpcPlatform.Current : PgIpcPlatform.Get(backend);

    /// <summary>
    /// A numeric option: a value that is not a number of type <typeparamref name="T"/>, or lies outside
    /// [<paramref name="min"/>, <paramref name="max"/>], is a parse error naming the option (exit code 2).
    /// </summary>
    public static Option<T> Number<T>(string name, string description, T min, T max, T defaultValue) where T : struct, INumber<T>
    {
        return new Option<T>(name)
        {
            Description = description,
            HelpName = "N",
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (!T.TryParse(text, NumberStyles.Number, CultureInfo.InvariantCulture, out T v))
                {
                    r.AddError($"{name}: '{text}' is not a {(T.IsInteger(T.One / (T.One + T.One)) ? "whole number" : "number")}");
                    return defaultValue;
                }
                if (v < min || v > max)
                    r.AddError($"{name} must be {min.ToString(null, CultureInfo.InvariantCulture)}..{max.ToString(null, CultureInfo.InvariantCulture)} (got {text})");
                return v;
            },
        };
    }
}

/// <summary>pgipc backends: the backends this machine has, the default marked.</summary>
internal static class BackendsCommand
{
    public static Command Create()
    {
        var c = new Command("backends", "List the backends this machine has (the default one marked).");
        c.SetAction(r =>
        {
            TextWriter w = r.InvocationConfiguration.Output;
            foreach (IPgIpcPlatform p in PgIpcPlatform.Available())
                w.WriteLine(p.Name + (p.Name == PgIpcPlatform.Current.Name ? " (default)" : ""));
            return 0;
        });
        return c;
    }
}
