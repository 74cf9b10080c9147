package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vipctl/vipctl/ipvs"
)

// flagValues are the values shell completion offers for a flag, by name,
// on every command that has it.
var flagValues = map[string][]string{
	"mode":       {string(ipvs.ModeLink), string(ipvs.ModeRoute)},
	"scheduler":  ipvs.Schedulers,
	"log-level":  {"debug", "info", "warn", "error"},
	"log-format": {"console", "json"},
}

// outputFormats are the values of an --output/-o flag, by its default: a
// flag defaulting to "text" takes text or json, one defaulting to "table"
// takes table or json. Any other (an output file) completes file names.
var outputFormats = map[string][]string{
	"text":  {"text", "json"},
	"table": {"table", "json"},
}

// registerCompletions walks the command tree and gives the flags above
// their value completion (`vipctl completion bash|zsh|fish|powershell`).
// A command that registered its own completion for a flag keeps it.
func registerCompletions(cmd *cobra.Command) {
	register := func(fs *pflag.FlagSet) {
		fs.VisitAll(func(f *pflag.Flag) {
			values, ok := flagValues[f.Name]
			if f.Name == "output" {
				values, ok = outputFormats[f.DefValue]
			}
			if !ok {
				return
			}
			// An error means a completion is registered already: keep it.
			_ = cmd.RegisterFlagCompletionFunc(f.Name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		})
	}
	register(cmd.LocalNonPersistentFlags())
	register(cmd.PersistentFlags())
	for _, c := range cmd.Commands() {
		registerCompletions(c)
	}
}
