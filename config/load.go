package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable the configuration reads.
const EnvPrefix = "ASYNCINFER_"

// envNotSettings are ASYNCINFER_ variables that are not settings (the test
// suite's), so they are not reported as unknown.
var envNotSettings = map[string]bool{
	"ASYNCINFER_CONFIG":                 true,
	"ASYNCINFER_REQUIRE_INTEGRATION":    true,
	"ASYNCINFER_KAFKA_IMAGE":            true,
	"ASYNCINFER_INTEGRATION_REPORT":     true,
	"ASYNCINFER_INTEGRATION_KEEP":       true,
	"ASYNCINFER_TESTCONTAINERS_RUNTIME": true,
	"ASYNCINFER_CACHE":                  true, // the set-up scripts' cache
	"ASYNCINFER_PYTHON":                 true, // the Python example's interpreter
}

// toolPrefixes start variables of the set-up scripts (deploy/), not
// settings.
var toolPrefixes = []string{"ASYNCINFER_MLSERVER_"}

func notSetting(k string) bool {
	if envNotSettings[k] {
		return true
	}
	for _, p := range toolPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// setting is one scalar or list leaf of Config.
type setting struct {
	Path   string // kafka.sasl.username
	Env    string // ASYNCINFER_KAFKA_SASL_USERNAME
	Flag   string // kafka-sasl-username
	Doc    string
	Secret bool
	Type   string // string, bool, int, float, duration, list
	v      reflect.Value
}

var durationType = reflect.TypeOf(time.Duration(0))

// settings lists the leaves of the struct v points to (models excluded: a
// list of structs is set in the file only).
func settings(v reflect.Value, path string) []setting {
	var out []setting
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" || name == "" {
			continue
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		fv := v.Field(i)
		if sf.Type.Kind() == reflect.Struct {
			out = append(out, settings(fv, p)...)
			continue
		}
		if sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct {
			continue
		}
		out = append(out, setting{
			Path:   p,
			Env:    EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_").Replace(p)),
			Flag:   strings.NewReplacer(".", "-", "_", "-").Replace(p),
			Doc:    sf.Tag.Get("doc"),
			Secret: sf.Tag.Get("secret") == "true",
			Type:   typeName(sf.Type),
			v:      fv,
		})
	}
	return out
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Slice:
		return "list"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() == reflect.Float64:
		return "float"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "int"
	}
	return "string"
}

// set parses s into the setting.
func (s setting) set(raw string) error {
	v := s.v
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("want a duration like 250ms or 5s, got %q", raw)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.Slice:
		var items []string
		for it := range strings.SplitSeq(raw, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		v.Set(reflect.ValueOf(items))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", raw)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("want a number, got %q", raw)
		}
		v.SetFloat(f)
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("want an integer, got %q", raw)
		}
		v.SetInt(n)
	default:
		v.SetString(raw)
	}
	return nil
}

// format renders the setting's value as set would take it.
func (s setting) format() string {
	v := s.v
	switch {
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.Slice:
		return strings.Join(v.Interface().([]string), ",")
	}
	return fmt.Sprint(v.Interface())
}

// Settings lists every setting with its current value in c, for references
// and help.
func Settings(c *Config) []Setting {
	var out []Setting
	for _, s := range settings(reflect.ValueOf(c).Elem(), "") {
		out = append(out, Setting{Path: s.Path, Env: s.Env, Flag: s.Flag, Doc: s.Doc, Secret: s.Secret, Type: s.Type, Value: s.format()})
	}
	return out
}

// Setting describes one setting.
type Setting struct {
	Path, Env, Flag, Doc, Type, Value string
	Secret                            bool
}

// Flags binds a flag to every setting on a FlagSet. Values given on the
// command line are applied by Loader.Load, after the file and environment,
// so that flags win. Aliases give short names to common settings
// (alias → path).
type Flags struct {
	fs      *pflag.FlagSet
	file    *string
	aliases map[string]string
}

// Aliases are the short flag names of the common settings.
var Aliases = map[string]string{
	"brokers":         "kafka.brokers",
	"registry":        "registry.url",
	"topic-prefix":    "topics.prefix",
	"partitions":      "topics.partitions",
	"reply-topics":    "emit.reply_topics",
	"max-inflight":    "runner.max_inflight",
	"producer-linger": "runner.producer_linger",
}

// BindFlags defines --config and a flag per setting on fs (defaults shown
// are Defaults()).
func BindFlags(fs *pflag.FlagSet) *Flags { return BindSomeFlags(fs, nil) }

// ConnectionSettings selects the settings a tool that only talks to the
// cluster needs: kafka, registry, topics, reply topics, log level.
func ConnectionSettings(path string) bool {
	for _, p := range []string{"kafka.", "registry.", "topics.", "emit.reply_topics", "log_level"} {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// BindSomeFlags is BindFlags for the settings keep selects (nil: all); the
// others still come from the file and the environment.
func BindSomeFlags(fs *pflag.FlagSet, keep func(path string) bool) *Flags {
	return BindFlagsOver(fs, Defaults(), keep)
}

// BindFlagsOver is BindSomeFlags showing def's values as the defaults (for
// a command that loads with LoadOver).
func BindFlagsOver(fs *pflag.FlagSet, def Config, keep func(path string) bool) *Flags {
	f := &Flags{fs: fs, aliases: map[string]string{}}
	f.file = fs.String("config", "", "YAML configuration file (also "+EnvPrefix+"CONFIG); flags > environment > file > defaults")
	byPath := map[string]setting{}
	for _, s := range settings(reflect.ValueOf(&def).Elem(), "") {
		if keep != nil && !keep(s.Path) {
			continue
		}
		byPath[s.Path] = s
		fs.Var(&flagValue{typ: s.Type, def: s.format()}, s.Flag, s.Doc+" ("+s.Env+")")
		if s.Type == "bool" {
			fs.Lookup(s.Flag).NoOptDefVal = "true" // --exactly-once, as well as --exactly-once=false
		}
	}
	for _, alias := range slices.Sorted(maps.Keys(Aliases)) {
		s, ok := byPath[Aliases[alias]]
		if !ok {
			continue
		}
		f.aliases[alias] = s.Path
		fs.Var(&flagValue{typ: s.Type, def: s.format()}, alias, "same as --"+s.Flag)
		if s.Type == "bool" {
			fs.Lookup(alias).NoOptDefVal = "true"
		}
	}
	return f
}

type flagValue struct {
	typ, def, raw string
	set           bool
}

func (f *flagValue) String() string {
	if f.set {
		return f.raw
	}
	return f.def
}
func (f *flagValue) Type() string { return f.typ }
func (f *flagValue) Set(s string) error {
	if f.typ == "list" && f.set {
		f.raw += "," + s
	} else {
		f.raw = s
	}
	f.set = true
	return nil
}

// Source tells where Load found the configuration.
type Source struct {
	File string   // "" if none
	Env  []string // variables applied
	Warn []string // e.g. unknown ASYNCINFER_ variables
}

// Load builds the configuration: defaults, then the file (from --config or
// ASYNCINFER_CONFIG), then environ's ASYNCINFER_ variables, then the flags set
// on the command line; and validates it. fl may be nil (no flags).
func Load(fl *Flags, environ []string) (*Config, Source, error) {
	return LoadOver(Defaults(), fl, environ)
}

// LoadOver is Load starting from base instead of Defaults (a command whose
// defaults differ: the demo's shorter retention).
func LoadOver(base Config, fl *Flags, environ []string) (*Config, Source, error) {
	c := base
	var src Source
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	file := env[EnvPrefix+"CONFIG"]
	if fl != nil && *fl.file != "" {
		file = *fl.file
	}
	if file != "" {
		if err := loadFile(&c, file); err != nil {
			return nil, src, err
		}
		src.File = file
	}
	ss := settings(reflect.ValueOf(&c).Elem(), "")
	var errs []error
	known := map[string]bool{}
	for _, s := range ss {
		known[s.Env] = true
		if raw, ok := env[s.Env]; ok {
			if err := s.set(raw); err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): %w", s.Env, s.Path, err))
			}
			src.Env = append(src.Env, s.Env)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if !known[k] && !notSetting(k) {
			src.Warn = append(src.Warn, fmt.Sprintf("%s is not a setting (see asyncinfer config reference)", k))
		}
	}
	if fl != nil {
		byFlag := map[string]setting{}
		for _, s := range ss {
			byFlag[s.Flag] = s
		}
		apply := func(flag string, s setting) {
			pf := fl.fs.Lookup(flag)
			if pf == nil || !pf.Changed {
				return
			}
			fv, ours := pf.Value.(*flagValue)
			if !ours {
				return // a flag of the command's own with the same name
			}
			if err := s.set(fv.raw); err != nil {
				errs = append(errs, fmt.Errorf("--%s: %w", flag, err))
			}
		}
		for _, s := range ss {
			apply(s.Flag, s)
		}
		for alias, path := range fl.aliases {
			for _, s := range ss {
				if s.Path == path {
					apply(alias, s)
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, src, err
	}
	if err := c.Validate(); err != nil {
		if src.File != "" {
			return nil, src, fmt.Errorf("configuration (file %s, environment, flags): %w", src.File, err)
		}
		return nil, src, fmt.Errorf("configuration: %w", err)
	}
	return &c, src, nil
}

// loadFile decodes a YAML file over c, rejecting unknown fields.
func loadFile(c *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: defaults
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// Parse decodes YAML over the defaults and validates it (for tests and
// tools that hold the text).
func Parse(b []byte) (*Config, error) {
	c := Defaults()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}
