// Package ttlv reads and writes KMIP's binary encoding, TTLV (Tag, Type,
// Length, Value; KMIP 1.x specification, section 9.1), with the bounds a
// server facing the network needs.
//
// Start with Decode, which turns one message into an Item tree, and with
// the builders (Struct, Int, Enum, Text, Bytes, ...) and Encode, which do
// the reverse. Item's accessors (Find, All, TextOf, EnumOf, ...) read a
// tree without panicking on whatever a client sent.
//
// The decoder is strict and bounded: every length must fit in the bytes
// that are left and match its type (4 for Integer, Enumeration and
// Interval, 8 for Long Integer, Boolean and Date-Time, a multiple of 8 for
// Big Integer), padding must be zero, and Limits caps the message size, the
// nesting depth and the number of items, so a "nesting bomb" or a huge
// declared length costs at most Limits.MaxMessage bytes of memory. Unknown
// tags decode fine (they are just numbers); the server decides what to do
// with them.
package ttlv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Type is a TTLV item type.
type Type byte

// The TTLV item types.
const (
	TypeStructure   Type = 0x01
	TypeInteger     Type = 0x02
	TypeLongInteger Type = 0x03
	TypeBigInteger  Type = 0x04
	TypeEnumeration Type = 0x05
	TypeBoolean     Type = 0x06
	TypeTextString  Type = 0x07
	TypeByteString  Type = 0x08
	TypeDateTime    Type = 0x09
	TypeInterval    Type = 0x0A
)

// Tag is a 3-byte KMIP tag (0x42xxxx).
type Tag uint32

// Item is one decoded TTLV item. Int holds Integer, Long Integer,
// Enumeration, Boolean (0 or 1), Date-Time (Unix seconds) and Interval;
// Bytes holds Text String, Byte String and Big Integer; Items holds a
// Structure's members in order.
type Item struct {
	Tag   Tag
	Type  Type
	Int   int64
	Bytes []byte
	Items []Item
}

// Limits bound what Decode accepts.
type Limits struct {
	MaxMessage int // bytes of one message, header included
	MaxDepth   int // nesting of structures
	MaxItems   int // items in one message
}

// DefaultLimits fits every request of the KMIP clients keyflow serves
// (keys, certificates, data to encrypt) with room to spare.
var DefaultLimits = Limits{MaxMessage: 1 << 20, MaxDepth: 16, MaxItems: 1 << 14}

// ErrLimit is wrapped by every error that a Limits bound caused.
var ErrLimit = errors.New("ttlv: limit exceeded")

// ErrMalformed is wrapped by every error about the encoding itself.
var ErrMalformed = errors.New("ttlv: malformed")

// HeaderLen is the length of an item's tag, type and length fields.
const HeaderLen = 8

// MessageLen reads the first item header of a message and returns the
// message's total length (header plus padded value), checked against l,
// so a reader knows how many more bytes to read before allocating them.
func MessageLen(hdr []byte, l Limits) (int, error) {
	if len(hdr) < HeaderLen {
		return 0, fmt.Errorf("%w: short header", ErrMalformed)
	}
	if Type(hdr[3]) != TypeStructure {
		return 0, fmt.Errorf("%w: a message is a structure, got type 0x%02x", ErrMalformed, hdr[3])
	}
	n := uint64(binary.BigEndian.Uint32(hdr[4:8]))
	if n%8 != 0 {
		return 0, fmt.Errorf("%w: structure length %d is not a multiple of 8", ErrMalformed, n)
	}
	if n+HeaderLen > uint64(l.MaxMessage) {
		return 0, fmt.Errorf("%w: message of %d bytes (limit %d)", ErrLimit, n+HeaderLen, l.MaxMessage)
	}
	return int(n) + HeaderLen, nil
}

// Decode decodes exactly one item filling b.
func Decode(b []byte, l Limits) (Item, error) {
	if len(b) > l.MaxMessage {
		return Item{}, fmt.Errorf("%w: message of %d bytes (limit %d)", ErrLimit, len(b), l.MaxMessage)
	}
	d := decoder{l: l}
	it, n, err := d.item(b, 0)
	if err != nil {
		return Item{}, err
	}
	if n != len(b) {
		return Item{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b)-n)
	}
	return it, nil
}

type decoder struct {
	l     Limits
	items int
}

func pad8(n int) int { return (n + 7) &^ 7 }

func (d *decoder) item(b []byte, depth int) (Item, int, error) {
	if len(b) < HeaderLen {
		return Item{}, 0, fmt.Errorf("%w: %d bytes left, an item header is 8", ErrMalformed, len(b))
	}
	d.items++
	if d.items > d.l.MaxItems {
		return Item{}, 0, fmt.Errorf("%w: more than %d items", ErrLimit, d.l.MaxItems)
	}
	it := Item{Tag: Tag(uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])), Type: Type(b[3])}
	n64 := uint64(binary.BigEndian.Uint32(b[4:8]))
	rest := b[HeaderLen:]
	if n64 > uint64(len(rest)) {
		return Item{}, 0, fmt.Errorf("%w: tag 0x%06x declares %d bytes, %d are left", ErrMalformed, it.Tag, n64, len(rest))
	}
	n := int(n64)
	padded := pad8(n)
	if padded > len(rest) {
		return Item{}, 0, fmt.Errorf("%w: tag 0x%06x is not padded to 8 bytes", ErrMalformed, it.Tag)
	}
	for _, c := range rest[n:padded] {
		if c != 0 {
			return Item{}, 0, fmt.Errorf("%w: tag 0x%06x has non-zero padding", ErrMalformed, it.Tag)
		}
	}
	v := rest[:n]
	fixed := func(want int) error {
		if n != want {
			return fmt.Errorf("%w: tag 0x%06x of type 0x%02x has length %d, want %d", ErrMalformed, it.Tag, it.Type, n, want)
		}
		return nil
	}
	switch it.Type {
	case TypeStructure:
		if depth+1 > d.l.MaxDepth {
			return Item{}, 0, fmt.Errorf("%w: structures nested deeper than %d", ErrLimit, d.l.MaxDepth)
		}
		for off := 0; off < n; {
			child, m, err := d.item(v[off:], depth+1)
			if err != nil {
				return Item{}, 0, err
			}
			it.Items = append(it.Items, child)
			off += m
		}
	case TypeInteger, TypeEnumeration, TypeInterval:
		if err := fixed(4); err != nil {
			return Item{}, 0, err
		}
		if it.Type == TypeInteger {
			it.Int = int64(int32(binary.BigEndian.Uint32(v)))
		} else {
			it.Int = int64(binary.BigEndian.Uint32(v))
		}
	case TypeLongInteger, TypeDateTime, TypeBoolean:
		if err := fixed(8); err != nil {
			return Item{}, 0, err
		}
		it.Int = int64(binary.BigEndian.Uint64(v))
		if it.Type == TypeBoolean && it.Int != 0 && it.Int != 1 {
			return Item{}, 0, fmt.Errorf("%w: tag 0x%06x is a boolean of value %d", ErrMalformed, it.Tag, it.Int)
		}
	case TypeBigInteger:
		if n%8 != 0 {
			return Item{}, 0, fmt.Errorf("%w: big integer length %d is not a multiple of 8", ErrMalformed, n)
		}
		it.Bytes = append([]byte(nil), v...)
	case TypeTextString, TypeByteString:
		it.Bytes = append([]byte(nil), v...)
	default:
		return Item{}, 0, fmt.Errorf("%w: tag 0x%06x has unknown type 0x%02x", ErrMalformed, it.Tag, it.Type)
	}
	return it, HeaderLen + padded, nil
}

// Encode encodes it.
func Encode(it Item) []byte { return appendItem(nil, it) }

func appendItem(b []byte, it Item) []byte {
	b = append(b, byte(it.Tag>>16), byte(it.Tag>>8), byte(it.Tag), byte(it.Type), 0, 0, 0, 0)
	lenAt := len(b) - 4
	start := len(b)
	switch it.Type {
	case TypeStructure:
		for _, c := range it.Items {
			b = appendItem(b, c)
		}
	case TypeInteger, TypeEnumeration, TypeInterval:
		b = binary.BigEndian.AppendUint32(b, uint32(it.Int))
	case TypeLongInteger, TypeDateTime, TypeBoolean:
		b = binary.BigEndian.AppendUint64(b, uint64(it.Int))
	default:
		b = append(b, it.Bytes...)
	}
	n := len(b) - start
	binary.BigEndian.PutUint32(b[lenAt:], uint32(n))
	for range pad8(n) - n {
		b = append(b, 0)
	}
	return b
}

// Builders.

// Struct builds a structure.
func Struct(t Tag, items ...Item) Item { return Item{Tag: t, Type: TypeStructure, Items: items} }

// Int builds an Integer.
func Int(t Tag, v int32) Item { return Item{Tag: t, Type: TypeInteger, Int: int64(v)} }

// Long builds a Long Integer.
func Long(t Tag, v int64) Item { return Item{Tag: t, Type: TypeLongInteger, Int: v} }

// Enum builds an Enumeration.
func Enum(t Tag, v uint32) Item { return Item{Tag: t, Type: TypeEnumeration, Int: int64(v)} }

// Bool builds a Boolean.
func Bool(t Tag, v bool) Item {
	it := Item{Tag: t, Type: TypeBoolean}
	if v {
		it.Int = 1
	}
	return it
}

// Text builds a Text String.
func Text(t Tag, s string) Item { return Item{Tag: t, Type: TypeTextString, Bytes: []byte(s)} }

// Bytes builds a Byte String.
func Bytes(t Tag, b []byte) Item { return Item{Tag: t, Type: TypeByteString, Bytes: b} }

// DateTime builds a Date-Time.
func DateTime(t Tag, v time.Time) Item { return Item{Tag: t, Type: TypeDateTime, Int: v.Unix()} }

// Accessors: all of them tolerate a missing item or a wrong type.

// Find returns the first member of a structure with tag t, or nil.
func (it *Item) Find(t Tag) *Item {
	if it == nil {
		return nil
	}
	for i := range it.Items {
		if it.Items[i].Tag == t {
			return &it.Items[i]
		}
	}
	return nil
}

// All returns the members of a structure with tag t.
func (it *Item) All(t Tag) []*Item {
	if it == nil {
		return nil
	}
	var out []*Item
	for i := range it.Items {
		if it.Items[i].Tag == t {
			out = append(out, &it.Items[i])
		}
	}
	return out
}

// TextOf returns the text of member t, and whether it is a Text String.
func (it *Item) TextOf(t Tag) (string, bool) {
	c := it.Find(t)
	if c == nil || c.Type != TypeTextString {
		return "", false
	}
	return string(c.Bytes), true
}

// BytesOf returns the bytes of member t, and whether it is a Byte String.
func (it *Item) BytesOf(t Tag) ([]byte, bool) {
	c := it.Find(t)
	if c == nil || c.Type != TypeByteString {
		return nil, false
	}
	return c.Bytes, true
}

// EnumOf returns the value of member t, and whether it is an Enumeration.
func (it *Item) EnumOf(t Tag) (uint32, bool) {
	c := it.Find(t)
	if c == nil || c.Type != TypeEnumeration {
		return 0, false
	}
	return uint32(c.Int), true
}

// IntOf returns the value of member t, and whether it is an Integer.
func (it *Item) IntOf(t Tag) (int32, bool) {
	c := it.Find(t)
	if c == nil || c.Type != TypeInteger {
		return 0, false
	}
	return int32(c.Int), true
}

// BoolOf returns the value of member t, and whether it is a Boolean.
func (it *Item) BoolOf(t Tag) (bool, bool) {
	c := it.Find(t)
	if c == nil || c.Type != TypeBoolean {
		return false, false
	}
	return c.Int == 1, true
}

// Clone returns a deep copy of it.
func (it *Item) Clone() Item {
	c := *it
	c.Bytes = append([]byte(nil), it.Bytes...)
	c.Items = make([]Item, len(it.Items))
	for i := range it.Items {
		c.Items[i] = it.Items[i].Clone()
	}
	return c
}
