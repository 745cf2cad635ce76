package kms

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file is the key lifecycle of NIST SP 800-57 Part 1 Rev. 5 §7: the
// states, the transitions the standard allows between them (T1–T15, plus
// KMIP's destroyed-compromised state), and what each state permits. Every
// operation asks [permitKey] and [permitVersion]; no operation checks a
// state on its own, so the table below is the whole policy.
//
// Pending deletion is not a NIST state: it is a flag on top of one (AWS
// KMS's PendingDeletion), set by ScheduleDeletion and cleared by
// CancelDeletion or by destruction. While it is set, the key refuses every
// use but describe.

// Transition is one allowed state change, named as in SP 800-57 (T1–T15)
// or KMIP (K1, K2).
type Transition struct {
	Name     string
	From, To KeyState
	// Why is the standard's reason, for messages and docs.
	Why string
}

// Transitions is the lifecycle table. T1 is generation (into PRE_ACTIVE,
// or straight on to ACTIVE by T4 when no activation date is set). To add a
// state (for example PENDING_IMPORT for external keys), add its rows here
// and its row in [statePermits].
var Transitions = []Transition{
	{"T1", "", StatePreActive, "generated"},
	{"T2", StatePreActive, StateDestroyed, "will not be needed"},
	{"T3", StatePreActive, StateCompromised, "integrity or confidentiality suspect"},
	{"T4", StatePreActive, StateActive, "activation date reached or activated"},
	{"T5", StateActive, StateDestroyed, "cryptoperiod reached or replaced, no compromise"},
	{"T6", StateActive, StateCompromised, "integrity or confidentiality suspect"},
	{"T7", StateActive, StateSuspended, "use suspended"},
	{"T8", StateActive, StateDeactivated, "no longer to apply protection"},
	{"T9", StateSuspended, StateDestroyed, "no longer needed, no compromise"},
	{"T10", StateSuspended, StateCompromised, "integrity or confidentiality suspect"},
	{"T11", StateSuspended, StateActive, "reason for suspension no longer exists"},
	{"T12", StateSuspended, StateDeactivated, "no longer to apply protection"},
	{"T13", StateDeactivated, StateDestroyed, "no longer needed"},
	{"T14", StateDeactivated, StateCompromised, "integrity or confidentiality suspect"},
	{"T15", StateCompromised, StateDestroyed, "no longer needed"},
	{"K1", StateCompromised, StateDestroyedCompromised, "a compromised key is destroyed (KMIP)"},
	{"K2", StateDestroyed, StateDestroyedCompromised, "a destroyed key is found compromised (KMIP)"},
	// External keys (BYOK, imports.go): import and the end of imported
	// material move them; set-state cannot.
	{"I1", StatePendingImport, StateActive, "key material imported"},
	{"I2", StateActive, StatePendingImport, "imported material expired or deleted"},
	{"I3", StatePendingImport, StateDestroyed, "no longer needed"},
}

// States lists every lifecycle state, in lifecycle order.
var States = []KeyState{StatePreActive, StateActive, StateSuspended, StateDeactivated, StateCompromised, StateDestroyed, StateDestroyedCompromised}

// ValidState reports whether s is a lifecycle state.
func ValidState(s KeyState) bool { return slices.Contains(States, s) }

// FindTransition returns the transition from → to, or an InvalidState
// error that names the current state and the states it may go to.
func FindTransition(from, to KeyState) (Transition, error) {
	if from == StateDestroyed && to == StateCompromised {
		to = StateDestroyedCompromised // a destroyed key found compromised
	}
	if from == StateCompromised && to == StateDestroyed {
		// KMIP keeps the fact of compromise across destruction.
		to = StateDestroyedCompromised
	}
	for _, t := range Transitions {
		if t.From == from && t.To == to {
			return t, nil
		}
	}
	return Transition{}, newError(CodeInvalidState, "the key is %s; %s -> %s is not a transition NIST SP 800-57 allows (from %s: %s)",
		from, from, to, from, strings.Join(nextStates(from), ", "))
}

func nextStates(from KeyState) []string {
	var out []string
	for _, t := range Transitions {
		if t.From == from {
			out = append(out, string(t.To))
		}
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

// Use is what an operation does with a key, for [permitKey].
type Use uint8

// Uses.
const (
	// UseDescribe reads metadata: every state allows it.
	UseDescribe Use = iota
	// UseProtect applies protection: encrypt, sign, generate a MAC or a
	// data key, seal, encapsulate, rotate.
	UseProtect
	// UseProcess processes protected data: decrypt, verify, verify a
	// MAC, open, decapsulate, read the public key.
	UseProcess
	// UseProcessCompromised is UseProcess with the caller's explicit
	// override, which COMPROMISED allows (and the operation audits).
	UseProcessCompromised
)

// processOf is the processing use with or without the compromise override.
func processOf(allowCompromised bool) Use {
	if allowCompromised {
		return UseProcessCompromised
	}
	return UseProcess
}

// statePermits is the table of what each state allows.
var statePermits = map[KeyState][]Use{
	StatePreActive:            {UseDescribe},
	StateActive:               {UseDescribe, UseProtect, UseProcess, UseProcessCompromised},
	StateSuspended:            {UseDescribe, UseProcess, UseProcessCompromised},
	StateDeactivated:          {UseDescribe, UseProcess, UseProcessCompromised},
	StateCompromised:          {UseDescribe, UseProcessCompromised},
	StateDestroyed:            {UseDescribe},
	StateDestroyedCompromised: {UseDescribe},
	StatePendingImport:        {UseDescribe},
}

// Allows reports whether state s permits use u.
func (s KeyState) Allows(u Use) bool { return slices.Contains(statePermits[s], u) }

// errPendingDeletion is the cause of every refusal of a key pending
// deletion; Service.finish sees it and records the attempt.
var errPendingDeletion = errors.New("key is pending deletion")

// permitKey decides whether k, in its state, may be used for u.
func permitKey(k *Key, u Use) error {
	if u != UseDescribe && k.Lifecycle.PendingDeletion {
		how := "cancel the deletion to use it"
		if k.MultiRegion {
			how += " (a replica's deletion is cancelled on the key's primary, region " + k.PrimaryRegion + ": key cancel-replica-deletion)"
		}
		return wrapError(CodeInvalidState, errPendingDeletion, "key %s is pending deletion (scheduled for %s); %s",
			k.ID, k.Lifecycle.DeletionDate.UTC().Format(time.RFC3339), how)
	}
	if k.State.Allows(u) {
		return nil
	}
	return stateRefusal(fmt.Sprintf("key %s", k.ID), k.State, u)
}

// permitVersion decides whether version v of k may be used for u at now:
// the key's own state, then the version's, then (for protection) the end
// of the version's originator-usage period.
func permitVersion(k *Key, v Version, u Use, now time.Time) error {
	if err := permitKey(k, u); err != nil {
		return err
	}
	if !v.State.Allows(u) {
		return stateRefusal(fmt.Sprintf("version %d of key %s", v.Number, k.ID), v.State, u)
	}
	if u != UseDescribe && !v.RetirementDate.IsZero() {
		return pendingRetirement(k, v)
	}
	if u == UseProtect && !v.DeactivationDate.IsZero() && !now.Before(v.DeactivationDate) {
		return newError(CodeInvalidState, "version %d of key %s is past its originator-usage period (ended %s); rotate the key",
			v.Number, k.ID, v.DeactivationDate.UTC().Format(time.RFC3339))
	}
	return nil
}

// permitPrimary is permitVersion for the primary version, which alone
// applies protection.
func permitPrimary(k *Key, now time.Time) (Version, error) {
	v, ok := k.Version(k.PrimaryVersion)
	if !ok {
		return Version{}, newError(CodeInvalidState, "key %s has no primary version", k.ID)
	}
	return v, permitVersion(k, v, UseProtect, now)
}

func stateRefusal(what string, s KeyState, u Use) error {
	var verb string
	switch u {
	case UseProtect:
		verb = "encrypt, sign or generate"
	case UseProcessCompromised:
		verb = "decrypt or verify"
	case UseProcess:
		verb = "decrypt or verify"
		if s == StateCompromised {
			return newError(CodeInvalidState, "%s is COMPROMISED; it decrypts or verifies only with the explicit override (allowCompromised), which is audited", what)
		}
	default:
		verb = "be used"
	}
	return newError(CodeInvalidState, "%s is %s and cannot %s", what, s, verb)
}

// KeyLifecycle is a key's lifecycle policy and lifecycle facts. It is
// metadata only.
type KeyLifecycle struct {
	// ActivationDate is when a PRE_ACTIVE key becomes ACTIVE (T4).
	ActivationDate time.Time `json:"activationDate,omitzero"`
	// RotationPeriod is the automatic rotation interval (0: none).
	RotationPeriod time.Duration `json:"rotationPeriod,omitempty"`
	// Cryptoperiod is each version's originator-usage period (0: the
	// default of its kind, see DefaultCryptoperiod).
	Cryptoperiod time.Duration `json:"cryptoperiod,omitempty"`
	// RewrapOnRotation makes every rotation (requested or scheduled)
	// rewrap the key's registered data keys to the new primary version
	// (docs/lifecycle.md, "Rotation and rewrap").
	RewrapOnRotation bool `json:"rewrapOnRotation,omitempty"`
	// PendingDeletion is AWS KMS's PendingDeletion, on top of the state.
	PendingDeletion bool      `json:"pendingDeletion,omitempty"`
	DeletionDate    time.Time `json:"deletionDate,omitzero"`
	// CancelDeletionOnUse is the deletion-safety policy: an attempt to use
	// the key while its deletion is pending cancels the deletion (it is
	// refused and recorded either way).
	CancelDeletionOnUse bool      `json:"cancelDeletionOnUse,omitempty"`
	StateChangedAt      time.Time `json:"stateChangedAt,omitzero"`
	DestroyedAt         time.Time `json:"destroyedAt,omitzero"`
}

// Rotation period and cryptoperiod limits.
const (
	Day               = 24 * time.Hour
	MinRotationPeriod = Day
	MaxRotationPeriod = 7 * 365 * Day
	MinDeletionWindow = 7 * Day
	MaxDeletionWindow = 30 * Day
	// DefaultDeletionWindow is AWS's default.
	DefaultDeletionWindow = 30 * Day
)

// DefaultCryptoperiod is the originator-usage period of SP 800-57 Table 1
// for a key of usage u: two years for symmetric encryption keys, and for
// signing keys two years as well, the middle of the table's 1–3 years. A
// key sets its own with --cryptoperiod.
func DefaultCryptoperiod(u KeyUsage) time.Duration {
	switch u {
	case "SIGN_VERIFY":
		return 2 * 365 * Day
	default:
		return 2 * 365 * Day
	}
}

func checkPeriod(name string, d, lo, hi time.Duration) error {
	if d == 0 {
		return nil
	}
	if d < lo || d > hi {
		return newError(CodeValidation, "%s must be between %d and %d days, not %s", name, lo/Day, hi/Day, d)
	}
	return nil
}

// permitRotation decides whether k may get a new primary version. A key
// pending deletion does not rotate; that is not a use of the key, so it is
// refused without the deletion-safety record.
func permitRotation(k *Key) error {
	if k.Lifecycle.PendingDeletion {
		return newError(CodeInvalidState, "key %s is pending deletion and does not rotate", k.ID)
	}
	if !k.State.Allows(UseProtect) {
		return newError(CodeInvalidState, "key %s is %s; only an ACTIVE key rotates", k.ID, k.State)
	}
	return nil
}

// initialLifecycle sets a new key's lifecycle: T1 then, unless the
// activation date is in the future, T4 at once.
func initialLifecycle(k *Key, p CreateKeyParams, now time.Time) {
	k.Lifecycle = KeyLifecycle{RotationPeriod: p.RotationPeriod, Cryptoperiod: p.Cryptoperiod, RewrapOnRotation: p.RewrapOnRotation, StateChangedAt: now}
	if p.ActivationDate.After(now) {
		k.Lifecycle.ActivationDate = p.ActivationDate.UTC()
		k.State = StatePreActive
		for i := range k.Versions {
			k.Versions[i].State = StatePreActive
		}
		return
	}
	for i := range k.Versions {
		k.Versions[i].DeactivationDate = now.Add(cryptoperiodOf(k))
	}
}
