package rollback

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUndoRunsLastFirstAndGoesOnAfterAnError(t *testing.T) {
	var s Stack
	var order []string
	rec := func(name string, err error) func(context.Context) error {
		return func(context.Context) error { order = append(order, name); return err }
	}
	s.Push("a", rec("a", nil))
	s.Push("b", rec("b", errors.New("boom")))
	s.Push("c", rec("c", nil))
	done, err := s.Undo(context.Background(), nil)
	assert.Equal(t, []string{"c", "b", "a"}, order)
	assert.Equal(t, []string{"c", "a"}, done)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "b: boom")
	assert.Equal(t, 0, s.Len(), "undone steps are not run twice")
	done, err = s.Undo(context.Background(), nil)
	assert.NoError(t, err)
	assert.Empty(t, done)
}

func TestUndoRunsWithACancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var s Stack
	var sawErr error
	s.Push("x", func(ctx context.Context) error { sawErr = ctx.Err(); return nil })
	done, err := s.Undo(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"x"}, done)
	assert.NoError(t, sawErr, "undo must not see the run's cancellation")
}

func TestAdoptKeepsOrder(t *testing.T) {
	var outer, inner Stack
	var order []string
	rec := func(name string) func(context.Context) error {
		return func(context.Context) error { order = append(order, name); return nil }
	}
	outer.Push("first", rec("first"))
	inner.Push("second", rec("second"))
	inner.Push("third", rec("third"))
	outer.Adopt(&inner)
	outer.Adopt(nil)
	assert.Equal(t, 0, inner.Len())
	assert.Equal(t, 3, outer.Len())
	_, err := outer.Undo(context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"third", "second", "first"}, order)
	var nilStack *Stack
	assert.Equal(t, 0, nilStack.Len())
}
