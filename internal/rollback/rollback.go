// Package rollback is vipctl's one way to undo a run's changes: each step
// records how to put back what it changed, as it changes it, and a failed
// run undoes them, last first, so that the node is left as it was found.
// ipvs.Converge and `vipctl join` record on a Stack; a new command that
// changes the node records on one too.
package rollback

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// Stack records how to undo the changes of a run. The zero value is empty
// and ready to use; a Stack is not safe for concurrent use.
type Stack struct {
	steps []step
}

type step struct {
	what string
	undo func(context.Context) error
}

// Push records how to undo one change. what names the undone state for the
// user ("hosts file restored", "/etc/foo removed").
func (s *Stack) Push(what string, undo func(context.Context) error) {
	s.steps = append(s.steps, step{what, undo})
}

// Adopt moves the steps of o on top of s, as if they had been pushed on s
// in o's order, and leaves o empty. A nil o adds nothing.
func (s *Stack) Adopt(o *Stack) {
	if o == nil || o == s {
		return
	}
	s.steps = append(s.steps, o.steps...)
	o.steps = nil
}

// Len reports how many steps are recorded.
func (s *Stack) Len() int {
	if s == nil {
		return 0
	}
	return len(s.steps)
}

// Undo runs every recorded step, last first, goes on after a step fails,
// and leaves s empty. It runs even when ctx has been cancelled (a cancelled
// run is one to put back), keeping ctx's values. It returns the names of
// the steps undone, in the order undone, and the failures joined, each
// naming its step; log (may be nil) gets one line per step.
func (s *Stack) Undo(ctx context.Context, log *zap.Logger) ([]string, error) {
	if s == nil {
		return nil, nil
	}
	if log == nil {
		log = zap.NewNop()
	}
	ctx = context.WithoutCancel(ctx)
	steps := s.steps
	s.steps = nil
	var done []string
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		st := steps[i]
		if err := st.undo(ctx); err != nil {
			log.Error("undo failed", zap.String("change", st.what), zap.Error(err))
			errs = append(errs, fmt.Errorf("%s: %w", st.what, err))
			continue
		}
		log.Info("undone", zap.String("change", st.what))
		done = append(done, st.what)
	}
	return done, errors.Join(errs...)
}
