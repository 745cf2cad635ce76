package awskms

// The replies of the hot operations (Encrypt, Decrypt, GenerateDataKey)
// as structs: encoding/json writes a struct in one pass over cached field
// encoders, where a map[string]any costs a sort of its keys and a boxed
// value per field on every request. Field names and types are the AWS
// model's.

type encryptReply struct {
	CiphertextBlob      []byte `json:"CiphertextBlob"`
	KeyID               string `json:"KeyId"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
}

type decryptReply struct {
	Plaintext           []byte `json:"Plaintext"`
	KeyID               string `json:"KeyId"`
	EncryptionAlgorithm string `json:"EncryptionAlgorithm"`
}

type dataKeyReply struct {
	CiphertextBlob []byte `json:"CiphertextBlob"`
	Plaintext      []byte `json:"Plaintext,omitempty"` // absent: GenerateDataKeyWithoutPlaintext
	KeyID          string `json:"KeyId"`
}
