//go:build !watchdog

package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipctl/vipctl/image"
	"github.com/vipctl/vipctl/internal/version"
	"go.uber.org/zap"
)

func newImageCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Short:   "Build vipctl's container image without a Docker engine (for air-gapped installs)",
		Example: `  vipctl image build --binary linux/amd64=bin/vipctl -o vipctl-image.tar`,
	}
	cmd.AddCommand(newImageBuildCmd(a))
	return cmd
}

// imageBuildFlags are `vipctl image build`'s flags.
type imageBuildFlags struct {
	binaries []string
	tag      string
	version  string
	revision string
	source   string
	created  string
	format   string
	output   string
}

func newImageBuildCmd(a *app) *cobra.Command {
	f := imageBuildFlags{}
	cmd := &cobra.Command{
		Use:   "build --binary linux/amd64=PATH [--binary linux/arm64=PATH] -o FILE",
		Short: "Build the watchdog image from static vipctl binaries into an image tarball",
		Long: `Build vipctl's image from static vipctl binaries (CGO_ENABLED=0), with no
Docker engine and no network: the binary at /vipctl on an empty base,
Entrypoint ["/vipctl"], Cmd ["care"], user 0 (netlink and IPVS need root
with CAP_NET_ADMIN), OCI labels for version, revision and source.

The build is reproducible: every timestamp is --created (default
$SOURCE_DATE_EPOCH, else the Unix epoch), so the same inputs give the same
digests. The digests are printed on stdout, one "PLATFORM DIGEST" line per
image and an "index DIGEST" line for a multi-arch OCI archive.

Formats:
  docker-archive  one platform; ctr -n k8s.io images import, docker load and
                  podman load all accept it (the offline bundle ships this)
  oci-archive     any number of platforms; with several, a multi-arch index.
                  ctr images import, podman load, skopeo copy oci-archive:...
                  and Docker 25+ accept it`,
		Example: `  vipctl image build --binary linux/amd64=dist/amd64/vipctl \
    --version v0.1.0 --revision $(git rev-parse HEAD) -o vipctl-image-amd64.tar
  ctr -n k8s.io images import vipctl-image-amd64.tar`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runImageBuild(cmd, a.log, f)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.binaries, "binary", nil, "PLATFORM=PATH of a static vipctl binary, e.g. linux/amd64=bin/vipctl (repeat for more platforms)")
	fl.StringVar(&f.tag, "tag", "", "image reference to name the image (default "+image.DefaultRepository+":<--version>)")
	fl.StringVar(&f.version, "version", version.Version, "version stamped in the label "+image.LabelVersion+" and the default tag")
	fl.StringVar(&f.revision, "revision", version.Commit, "source commit stamped in the label "+image.LabelRevision)
	fl.StringVar(&f.source, "source", image.DefaultSource, "source repository URL stamped in the label "+image.LabelSource)
	fl.StringVar(&f.created, "created", "", "creation time: RFC 3339 or seconds since the epoch (default $SOURCE_DATE_EPOCH, else 0)")
	fl.StringVar(&f.format, "format", string(image.FormatDocker), "archive format: docker-archive (one platform) or oci-archive")
	fl.StringVarP(&f.output, "output", "o", "", "file to write the image archive to (required)")
	formats := make([]string, 0, len(image.Formats()))
	for _, f := range image.Formats() {
		formats = append(formats, string(f))
	}
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runImageBuild(cmd *cobra.Command, log *zap.Logger, f imageBuildFlags) error {
	if f.output == "" {
		return fmt.Errorf("--output: required")
	}
	format, err := image.ParseFormat(f.format)
	if err != nil {
		return err
	}
	var bins []image.Binary
	for _, s := range f.binaries {
		b, err := image.ParseBinary(s)
		if err != nil {
			return err
		}
		bins = append(bins, b)
	}
	if len(bins) == 0 {
		return fmt.Errorf("--binary: required, e.g. --binary linux/amd64=bin/vipctl")
	}
	tagStr := f.tag
	if tagStr == "" {
		tagStr = image.DefaultRepository + ":" + f.version
	}
	tag, err := image.ParseTag(tagStr)
	if err != nil {
		return err
	}
	created, err := createdTime(f.created)
	if err != nil {
		return err
	}

	built, err := image.Build(bins, image.Meta{Version: f.version, Revision: f.revision, Source: f.source, Created: created})
	if err != nil {
		return err
	}
	if err := image.WriteFile(f.output, format, tag, built); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	for _, pi := range built.Images {
		d, err := pi.Image.Digest()
		if err != nil {
			return fmt.Errorf("%s: digest: %w", pi.Platform, err)
		}
		if _, err := fmt.Fprintf(out, "%s %s\n", pi.Platform, d); err != nil {
			return err
		}
	}
	if format == image.FormatOCI && len(built.Images) > 1 {
		d, err := built.Index.Digest()
		if err != nil {
			return fmt.Errorf("index digest: %w", err)
		}
		if _, err := fmt.Fprintf(out, "index %s\n", d); err != nil {
			return err
		}
	}
	log.Info("wrote image archive", zap.String("file", f.output), zap.String("format", string(format)),
		zap.String("tag", tag.Name()), zap.Int("platforms", len(built.Images)), zap.Time("created", created))
	return nil
}

// createdTime is --created, else $SOURCE_DATE_EPOCH, else the Unix epoch: never
// the current time, which would make every build differ.
func createdTime(flag string) (time.Time, error) {
	if flag != "" {
		return image.ParseCreated(flag)
	}
	if env := os.Getenv("SOURCE_DATE_EPOCH"); env != "" {
		sec, err := strconv.ParseInt(env, 10, 64)
		if err != nil || sec < 0 {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since the epoch", env)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	return time.Unix(0, 0).UTC(), nil
}
